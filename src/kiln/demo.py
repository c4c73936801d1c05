"""The main job: Kiln's lifecycle end to end on the local embedded default.

Data is generated, then the churn_training pipeline runs as KFP would run it (each step a process), then a challenger
is refused a canary in production (it is not approved) and the endpoint serves the champion alone with the challenger
as a shadow, drifting traffic is monitored, and an edge device pulls the signed bundle. Every step reports what it made and how long it took.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from kiln.compile.keys import public_key_path
from kiln.data.dataset import staged_dataset, write_dataset
from kiln.data.generate import GenerateOptions, generate_churn
from kiln.data.schema import CHURN_SCHEMA
from kiln.doctor import ENGINES, check_disk, check_services
from kiln.errors import EnvironmentProblem
from kiln.evaluation.candidate import register_run_model
from kiln.monitoring.endpoint import capture_root
from kiln.monitoring.labels import ingest_labels
from kiln.monitoring.run import run_monitor
from kiln.monitoring.simulate import drift_halfway
from kiln.process import start
from kiln.progress import Progress, no_progress
from kiln.registry.versions import get_version
from kiln.serving.approval import NotCleared
from kiln.serving.capture import wait_for_capture
from kiln.serving.local import delete, deploy, list_endpoints, update
from kiln.serving.replay import replay
from kiln.serving.spec import parse_spec
from kiln.settings import load_settings
from kiln.stack.services import artifact_server, studio
from kiln.training.data import load_training_set
from kiln.training.run import train
from kiln.workflow.catalog import load_pipeline
from kiln.workflow.local_run import run_local
from kiln.workspace import Workspace, init_workspace, open_workspace

DEMO_CUSTOMERS = 2000
DEMO_DAYS = 120
DEMO_SEED = 7
DEMO_TRIALS = 6
DEMO_MAX_ITERATIONS = 6
DEMO_BAKE_SECONDS = 5.0  # the pipeline's canary: nothing else calls a fresh local endpoint, so a short watch
DEMO_MODEL = "churn"
DEMO_ENDPOINT = "churn"
DEMO_DEVICE = "edge-x86-1"
DEMO_MONITOR_ROWS = 800
# The second half of the monitored traffic: customers using far less than the model was trained on.
DEMO_DRIFT = {"usage_minutes_7d_mean": -1.5, "usage_minutes_30d_mean": -1.5}


@dataclass
class StepResult:
    name: str
    seconds: float
    outputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DemoContext:
    root: Path
    dataset: Path | None = None
    training_set: Path | None = None
    pipeline_run: str | None = None
    version: str | None = None
    challenger: str | None = None
    url: str | None = None
    report: str | None = None
    example: dict[str, Any] | None = None
    results: list[StepResult] = field(default_factory=list)
    progress: Progress = no_progress


def _environment(ctx: DemoContext) -> dict[str, Any]:
    """Engines installed (versions read, not imported: `kiln doctor` imports them), disk and stores."""

    versions, missing = {}, []
    for _, dist, _ in ENGINES:
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            missing.append(dist)
    problems = [c for c in [*check_services(load_settings(ctx.root)), check_disk(ctx.root)] if not c.ok]
    if missing or problems:
        lines = [f"{d}: not installed" for d in missing] + [f"{c.name}: {c.detail}" for c in problems]
        raise EnvironmentProblem("environment check failed:\n  " + "\n  ".join(lines), hint="run `kiln doctor` for details")
    return {"engines": versions}


def _workspace(ctx: DemoContext) -> dict[str, Any]:
    ws, created = init_workspace(ctx.root)
    return {"workspace": str(ws.root), "created": len(created)}


def _generate(ctx: DemoContext) -> dict[str, Any]:
    ctx.dataset = ctx.root / "data" / "churn"
    opts = GenerateOptions(customers=DEMO_CUSTOMERS, days=DEMO_DAYS, seed=DEMO_SEED,
                           end=datetime.now(UTC).date())
    with staged_dataset(ctx.dataset, overwrite=True) as stage:
        frames, stats = generate_churn(opts)
        manifest = write_dataset(stage, "churn", CHURN_SCHEMA, frames,
                                 {"generator": "kiln.data.generate", "customers": opts.customers, "days": opts.days,
                                  "seed": opts.seed, "end": str(opts.end)}, stats)
    return {"dataset": str(ctx.dataset), "customers": stats["customers"], "events": stats["events"],
            "labels": stats["labels"], "churn_rate": stats["churn_rate"], "content_hash": manifest["content_hash"]}


def _pipeline(ctx: DemoContext) -> dict[str, Any]:
    """The churn_training pipeline, run here by kfp.local: each of its steps a process, as in a cluster a pod."""

    if ctx.dataset is None:
        raise EnvironmentProblem("no dataset for the pipeline: the generate step did not run")
    ws = open_workspace(ctx.root)
    if DEMO_ENDPOINT in list_endpoints(ws):
        delete(ws, DEMO_ENDPOINT)  # a demo run again in the same workspace starts its endpoint afresh
    run = run_local(ws, load_pipeline("churn_training"), {
        "data": str(ctx.dataset), "model_name": DEMO_MODEL, "trials": DEMO_TRIALS,
        "max_iterations": DEMO_MAX_ITERATIONS, "seed": DEMO_SEED, "endpoint": DEMO_ENDPOINT,
        "bake_seconds": DEMO_BAKE_SECONDS, "explain_rows": 200}, ctx.progress)
    ctx.pipeline_run = run.run
    champion = get_version(ws, f"{DEMO_MODEL}@champion")
    ctx.version = f"{champion.name}/{champion.version}"
    ctx.training_set = Path(champion.tags["kiln.training_set"])
    if champion.tags.get("kiln.pipeline_run") != run.run:
        raise EnvironmentProblem(f"pipeline run {run.run} ended without a new champion (the champion is "
                                 f"{ctx.version}, from {champion.tags.get('kiln.pipeline_run', 'elsewhere')})",
                                 hint=f"its log: {run.log}")
    steps = {f"  {t.name}": f"{t.seconds:.1f} s" for t in run.tasks}
    return {"run": run.run, **steps, "champion": ctx.version, "test_auc": champion.tags.get("kiln.test_auc"),
            "lineage": f"tag kiln.pipeline_run={run.run} on the version and its MLflow runs",
            "outputs": run.root, "log": run.log}


def _canary_and_shadow(ctx: DemoContext) -> dict[str, Any]:
    """An MLP challenger: refused as a canary in production (it is not approved), it serves as a
    shadow that sees every request while the champion alone answers."""

    if ctx.version is None or ctx.training_set is None:
        raise EnvironmentProblem("no champion to serve beside: the pipeline step did not run")
    ws = open_workspace(ctx.root)
    result = train(ws, ctx.training_set, "mlp", seed=DEMO_SEED, progress=ctx.progress)
    version = register_run_model(ws, DEMO_MODEL, result.run_id, ctx.progress, model_uri=result.model_uri).version
    ctx.challenger = f"{version.name}/{version.version}"
    refusal = _refused_canary(ws, ctx)
    delete(ws, DEMO_ENDPOINT)  # the pipeline's endpoint is started again with the challenger as its shadow
    spec = parse_spec({
        "name": DEMO_ENDPOINT,
        "variants": [{"name": "primary", "model": f"models:/{ctx.version}"}],
        # The challenger's ONNX graph on ONNX Runtime sees every request, its answers kept apart.
        "shadow": {"name": "shadow", "model": f"models:/{ctx.challenger}", "runtime": "onnx", "sample_percent": 100},
        "policy": {"type": "canary", "step_percent": 20, "bake_seconds": DEMO_BAKE_SECONDS},
        "capture": {"flush_seconds": 0.5},
    }, "demo endpoint")
    ctx.url = f"{deploy(ws, spec, ctx.progress).url}/v1/models/{DEMO_ENDPOINT}:predict"
    test_auc = result.metrics["test"]["auc"]
    assert test_auc is not None  # the demo's test split holds both classes
    return {"challenger": ctx.challenger, "challenger_family": "mlp",
            "challenger_test_auc": round(test_auc, 4), "challenger_approval": version.approval,
            "challenger_gate": version.gate, "canary": f"refused: {refusal.message}",
            "endpoint": ctx.url, "variants": f"primary {ctx.version} 100% (production), "
                                             f"shadow {ctx.challenger} on ONNX Runtime (every request, answers no one)"}


def _refused_canary(ws: Workspace, ctx: DemoContext) -> NotCleared:
    """Ask for the challenger as a canary on the pipeline's endpoint; the refusal (nothing was started or changed)."""
    if DEMO_ENDPOINT not in list_endpoints(ws):
        raise EnvironmentProblem(f"no endpoint {DEMO_ENDPOINT} to try a canary on: the pipeline step did not deploy")
    ctx.progress(f"asking for {ctx.challenger} as a canary in production on endpoint {DEMO_ENDPOINT}")
    try:
        update(ws, DEMO_ENDPOINT, f"models:/{ctx.challenger}", progress=ctx.progress)
    except NotCleared as refused:
        ctx.progress(f"refused: {refused.message}")
        return refused
    raise EnvironmentProblem(f"{ctx.challenger} was let into production as a canary although it is "
                             "not approved: the approval check did not refuse it")


def _monitor(ctx: DemoContext) -> dict[str, Any]:
    import pandas as pd

    if ctx.training_set is None:
        raise EnvironmentProblem("no training set to draw traffic from: the pipeline step did not run")
    ws = open_workspace(ctx.root)
    start = datetime.now(UTC)
    rows = pd.read_parquet(ctx.training_set).tail(DEMO_MONITOR_ROWS)
    traffic = ctx.root / "data" / "monitor_traffic.parquet"
    drift_halfway(rows, DEMO_DRIFT, seed=DEMO_SEED).to_parquet(traffic, index=False)
    ctx.progress(f"traffic whose second half drifts: {', '.join(DEMO_DRIFT)} moved by -1.5 deviations")
    sent = replay(ws, DEMO_ENDPOINT, traffic, rps=200, progress=ctx.progress)
    wait_for_capture(capture_root(ws, DEMO_ENDPOINT), DEMO_ENDPOINT, start, sent.rows, ctx.progress)
    ingest_labels(ws, DEMO_ENDPOINT, sent.log)  # the replay log holds each request's true label
    result = run_monitor(ws, DEMO_ENDPOINT, since=start, progress=ctx.progress)
    found = [f"{v.monitor}: {v.feature} {v.metric} {v.observed} (threshold {v.threshold})" for v in result.violations]
    monitors = result.monitors  # None: no traffic in the window
    quality = (monitors.model_quality.observed if monitors else None) or {}
    drifted = (monitors.data_drift.drifted if monitors else None) or []
    ndcg = monitors.attribution_drift.ndcg if monitors else None
    ctx.report = result.report
    return {"requests": result.records, "model": result.model, "status": result.status,
            "violations": len(found), **{f"violation {i}": text for i, text in enumerate(found, 1)},
            "drifted_features": ", ".join(drifted) or "none",
            "live_auc": round(quality["roc_auc"], 4) if quality.get("roc_auc") else "-",
            "attribution_ndcg": "-" if ndcg is None else ndcg,
            "report": result.report, "violations_file": result.violations_file,
            "history": "`kiln up`, then Evidently's UI at "
                       f"http://{ws.settings.services.evidently.host}:{ws.settings.services.evidently.port}"}


def _edge(ctx: DemoContext) -> dict[str, Any]:
    """This machine as an x86_64 edge device: the agent pulls the published bundle, verifies it and predicts."""

    if ctx.training_set is None:
        raise EnvironmentProblem("no training set to draw a request from: the pipeline step did not run")
    ws = open_workspace(ctx.root)
    server = artifact_server(ws)
    start(ws.state_dir, server, ctx.progress)  # the distribution point `kiln up` runs too
    agent, state = str(Path(sys.executable).with_name("kiln-edge")), ctx.root / "edge" / DEMO_DEVICE
    pulled = subprocess.run([agent, "run", "--once", "--server", server.url, "--device-id", DEMO_DEVICE,
                             "--target", "x86_64", "--trust", str(public_key_path(ws)), "--state", str(state)],
                            capture_output=True, text=True, timeout=300)
    if pulled.returncode != 0:
        raise EnvironmentProblem(f"the edge agent pulled nothing: {pulled.stderr.strip()[-500:]}")
    data = load_training_set(ctx.training_set)
    first = data.frame[data.features].head(1)
    row = first.astype(object).where(first.notna(), None)
    ctx.example = row.to_dict("records")[0]
    answer = subprocess.run([agent, "predict", "--state", str(state)], capture_output=True, text=True, timeout=120,
                            input=json.dumps({"instances": row.to_dict("records")}, default=str))
    if answer.returncode != 0:
        raise EnvironmentProblem(f"the edge agent could not predict: {answer.stderr.strip()[-500:]}")
    active = (state / "active").resolve()
    manifest = json.loads((active / "manifest.json").read_text())
    probability = json.loads(answer.stdout)["predictions"][0]["probability"]
    return {"device": f"{DEMO_DEVICE} (this machine, x86_64)", "installed": manifest.get("id", active.name),
            "model": "{name}/{version} ({family})".format(**manifest["model"]),
            "signature": "verified against the workspace's public key",
            "probability_of_first_row": round(probability, 4), "distribution_point": server.url,
            "aarch64": "the same agent on an emulated arm64 device: tests/test_edge.py (qemu-user)"}


STEPS: list[tuple[str, Callable[[DemoContext], dict[str, Any]]]] = [
    ("check the environment", _environment),
    ("create the workspace", _workspace),
    ("generate churn data", _generate),
    ("run the churn_training pipeline (KFP, locally): validate, ingest (Feast), training set, tune (Ray Tune, "
     "Hyperband), evaluate, gate, register (MLflow), explain (SHAP), compile x86_64/aarch64/CUDA (TVM), publish, "
     "deploy (KServe), baseline", _pipeline),
    ("serve the champion alone in production and an MLP challenger as a shadow, its canary refused as not approved "
     "(KServe)", _canary_and_shadow),
    ("monitor traffic that drifts halfway: data, quality, bias, attribution (Evidently)", _monitor),
    ("an edge device pulls the signed x86_64 bundle and predicts", _edge),
]


def summary(ctx: DemoContext) -> dict[str, Any]:
    """Where to look next: versions, the endpoint with a request to paste, reports and UIs; Kiln Studio is started
    here, left running like the endpoint, to show it all in one place."""

    ws = open_workspace(ctx.root)
    services = ws.settings.services
    console = studio(ws)
    start(ws.state_dir, console, ctx.progress)
    example = ctx.example or {}
    curl = (f"curl -s -H 'Content-Type: application/json' -d '{{\"instances\": [{_json(example)}]}}' {ctx.url}"
            if ctx.url else "-")
    return {"champion": ctx.version, "challenger": ctx.challenger, "pipeline_run": ctx.pipeline_run,
            "studio": console.url, "endpoint": ctx.url, "try_it": curl, "monitor_report": ctx.report,
            "model_card": str(ws.folder("reports") / "cards" / f"{(ctx.version or '-').replace('/', '-v')}.html"),
            "uis": f"`kiln up -w {ctx.root}`: MLflow http://{services.mlflow.host}:{services.mlflow.port}, "
                   f"Evidently http://{services.evidently.host}:{services.evidently.port}",
            "stop": f"`kiln down -w {ctx.root}` stops the endpoint, Studio and the servers"}


def _json(row: dict[str, Any]) -> str:
    return json.dumps(row, default=str)


def run_demo(root: Path, on_step: Callable[[int, int, str], None] = lambda i, n, name: None,
             progress: Progress = no_progress) -> DemoContext:
    """Run every step in order; an error stops the run and propagates with its own message."""
    ctx = DemoContext(root=root.expanduser().resolve(), progress=progress)
    for i, (name, step) in enumerate(STEPS, 1):
        on_step(i, len(STEPS), name)
        t0 = time.perf_counter()
        outputs = step(ctx)
        ctx.results.append(StepResult(name, time.perf_counter() - t0, outputs))
    return ctx


@dataclass
class MainJob:
    """The main job's run: each step with its time and outputs, the whole time, and where to look next."""

    workspace: str
    seconds: float
    steps: list[StepResult]
    summary: dict[str, Any]


def main_job(root: Path, on_step: Callable[[int, int, str], None] = lambda i, n, name: None,
             progress: Progress = no_progress) -> MainJob:
    """The main job: every step of the lifecycle in order, timed, and the summary of what it made."""
    t0 = time.perf_counter()
    ctx = run_demo(root, on_step, progress)
    seconds = round(time.perf_counter() - t0, 2)
    return MainJob(str(ctx.root), seconds, ctx.results, summary(ctx))
