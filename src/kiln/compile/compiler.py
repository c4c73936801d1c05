"""`kiln compile`: a registered version -> per-target libraries -> parity -> signed bundle -> MLflow record."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kiln import tracking
from kiln.compile.build import BuiltLibrary, build_library
from kiln.compile.bundle import ENCODER, ManifestDraft, write_bundle
from kiln.compile.entry_graph import check_answers
from kiln.compile.keys import fingerprint, signing_key
from kiln.compile.parity import Parity, check_parity
from kiln.compile.runner import CompiledModel
from kiln.compile.source import SourceModel, file_sample, holdout_sample, load_source
from kiln.compile.store import artifacts_store, compiled_root, store_bundle
from kiln.compile.targets import CompileTarget, resolve_target
from kiln.compile.tuning import DEFAULT_TRIALS, TuningReport, check_tunable, tuning_dir
from kiln.compile.tuning_process import tune_apart
from kiln.errors import InputError
from kiln.progress import Progress, no_progress
from kiln.storage import S3Store
from kiln.workspace import Workspace

BATCH_SIZES = (1, 256)  # one library each: a single row, and the batch large requests are cut into
EXPERIMENT = "kiln-compile"
DEFAULT_EXPIRY_DAYS = 90.0


@dataclass
class CompileOptions:
    target: str
    tune: bool = False
    trials: int = DEFAULT_TRIALS
    retune: bool = False  # tune kernels that already have records too
    cpu: str | None = None
    gpu_arch: str | None = None
    sample: Path | None = None  # feature rows for the parity check (default: the version's held-out rows)
    expires_days: float = DEFAULT_EXPIRY_DAYS


@dataclass
class CompileResult:
    id: str
    path: Path
    model: str
    target: str
    libraries: dict[str, str]
    parity: Parity | None  # None where the target does not run here
    tuning: TuningReport | None  # None without --tune
    seconds: float
    mlflow_run_id: str
    notes: list[str] = field(default_factory=list)


def compile_version(ws: Workspace, ref: str, options: CompileOptions,
                    progress: Progress = no_progress) -> CompileResult:
    """Compile ``ref`` for one target into a signed bundle under artifacts/compiled; nothing is left on failure."""

    started = time.monotonic()
    target = resolve_target(options.target, options.cpu, options.gpu_arch)
    if options.retune and not options.tune:
        raise InputError("--retune goes with --tune", hint="add --tune")
    if options.tune:
        check_tunable(target, options.trials)
    source = load_source(ws, ref)
    progress(f"{source.name}/{source.version} ({source.family}): {len(source.graph.graph.node)} ONNX nodes, "
             f"{source.width} inputs")
    sample = file_sample(source, options.sample) if options.sample else holdout_sample(ws, source)
    if source.answers is not None:
        progress(f"the exported graph against the model's own predict() on {len(sample)} held-out rows")
        check_answers(source.graph, source.answers, source.task, sample, f"{source.name}/{source.version}")
    key = signing_key(ws)
    root = compiled_root(ws)
    root.mkdir(parents=True, exist_ok=True)
    building = root / f".building-{uuid.uuid4().hex[:8]}"
    building.mkdir()
    try:
        tuning = _tune(ws, source, target, options.trials, options.retune, progress) if options.tune else None
        libraries = _build_all(source, target, building, progress, Path(tuning.database) if tuning else None)
        parity, notes = None, []
        if target.runs_here:
            progress(f"parity against ONNX Runtime on {len(sample)} held-out rows")
            compiled = CompiledModel({lib.batch: lib.path for lib in libraries}, source.output()["shape"][1])
            parity = check_parity(source.graph, compiled, sample)
        else:
            why = "there is no GPU here" if target.name == "cuda" else f"this machine is not {target.machine}"
            notes.append(f"the {target.name} libraries were built and inspected, not run: {why}")
        (building / ENCODER).write_text(_json(source.encoder))
        draft = _draft(source, target, libraries, parity, tuning, notes, options.expires_days)
        manifest = write_bundle(building, draft, key, fingerprint(key.public_key()))
        store = artifacts_store(ws)
        if isinstance(store, S3Store):
            progress(f"copying the bundle to {store.location}/compiled/{manifest['id']}")
            store_bundle(store, building, f"compiled/{manifest['id']}")
        final = root / manifest["id"]
        building.rename(final)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    run_id = _record(ws, source, manifest, final)
    return CompileResult(id=manifest["id"], path=final, model=f"{source.name}/{source.version}", target=target.name,
                         libraries=manifest["libraries"], parity=parity, tuning=tuning,
                         seconds=round(time.monotonic() - started, 1), mlflow_run_id=run_id, notes=notes)


def _tune(ws: Workspace, source: SourceModel, target: CompileTarget, trials: int, again: bool,
          progress: Progress) -> TuningReport:
    """MetaSchedule over the kernels of every batch size at once, in one budget of trials."""

    return tune_apart(source.graph, source.width, BATCH_SIZES, target, tuning_dir(ws, target), trials, again,
                      progress)


def _build_all(source: SourceModel, target: CompileTarget, folder: Path, progress: Progress,
               tuning_dir: Path | None) -> list[BuiltLibrary]:
    libraries = []
    for batch in BATCH_SIZES:
        progress(f"compiling for {target.name} ({target.cpu}{', ' + target.gpu_arch if target.gpu_arch else ''}) "
                 f"at batch {batch}{' with the tuned schedules' if tuning_dir else ''}")
        libraries.append(build_library(source.graph, source.width, batch, target, folder / f"model-b{batch}.so",
                                       tuning_dir))
    return libraries


def _draft(source: SourceModel, target: CompileTarget, libraries: list[BuiltLibrary], parity: Parity | None,
           tuning: TuningReport | None, notes: list[str], expires_days: float) -> ManifestDraft:
    import tvm

    return ManifestDraft(
        model={"name": source.name, "version": source.version, "family": source.family,
               "task": source.task.kind, "classes": list(source.task.classes),
               "threshold": source.threshold, "features": source.meta.get("features", [])},
        target=target.describe(),
        runtime={"tvm": tvm.__version__},
        input={"name": "features", "dtype": "float32", "shape": [-1, source.width], "columns": source.feature_names,
               "encoder": ENCODER, **({"schema": source.schema} if source.schema else {})},
        output=source.output(),
        libraries={str(lib.batch): lib.path.name for lib in libraries},
        expires_days=expires_days,
        details={"parity": asdict(parity) if parity else None, "tuning": asdict(tuning) if tuning else None, "notes": notes,
                 "compile_seconds": {str(lib.batch): round(lib.seconds, 2) for lib in libraries},
                 "cuda": {str(lib.batch): lib.details for lib in libraries} if target.name == "cuda" else None},
    )


def _record(ws: Workspace, source: SourceModel, manifest: dict[str, Any], folder: Path) -> str:
    """An MLflow run holding the bundle, linked both ways to the model version it was compiled from."""

    c = tracking.client(ws)
    target = manifest["target"]["name"]
    run = c.create_run(tracking.experiment_id(ws, EXPERIMENT), run_name=manifest["id"], tags={
        "kiln.artifact_id": manifest["id"], "kiln.model_name": source.name, "kiln.model_version": source.version,
        "kiln.target": target, "kiln.code_version": tracking.code_version()})
    run_id: str = run.info.run_id
    parity = (manifest["details"] or {}).get("parity")
    if parity:
        c.log_metric(run_id, "parity_max_abs_diff", parity["max_abs_diff"])
    for batch, seconds in manifest["details"]["compile_seconds"].items():
        c.log_metric(run_id, f"compile_seconds_b{batch}", seconds)
    tuning = manifest["details"].get("tuning")
    if tuning:
        c.log_metric(run_id, "tuning_seconds", tuning["seconds"])
        c.log_metric(run_id, "tuning_trials", tuning["trials"])
        c.log_metric(run_id, "tuning_kernels_reused", len(tuning["reused"]))
        c.set_tag(run_id, "kiln.tuned", "true")
    c.log_artifacts(run_id, str(folder), artifact_path="bundle")
    c.set_terminated(run_id)
    c.set_model_version_tag(source.name, source.version, f"kiln.compiled.{target}",
                            f"{manifest['id']} (run {run_id})")
    return run_id


def _json(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"
