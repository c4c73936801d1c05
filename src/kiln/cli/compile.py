"""`kiln compile` and `kiln artifacts ...`: Neo on TVM, signed bundles, and their distribution point."""

from __future__ import annotations

from pathlib import Path

import typer

from kiln.cli.command import WorkspaceOption, respond
from kiln.cli.output import JsonOption, out, progress
from kiln.compile.bundle import Verdict
from kiln.compile.compiler import CompileOptions, CompileResult, compile_version
from kiln.compile.store import ArtifactInfo, Published, list_artifacts, publish_artifacts, verify_artifacts
from kiln.compile.tuning import DEFAULT_TRIALS
from kiln.errors import InputError

app = typer.Typer(help="Compiled, signed model artifacts: list, verify, publish.", no_args_is_help=True,
                  rich_markup_mode=None)


def compile_(
    model: str = typer.Argument(..., help="NAME@ALIAS (e.g. churn@champion) or NAME/VERSION."),
    target: str = typer.Option(..., "--target", help="x86_64, aarch64 or cuda."),
    tune: bool = typer.Option(False, "--tune", help="Schedule the kernels for this machine's CPU with MetaSchedule; "
                                                    "the records are kept and reused for the same shapes."),
    trials: int = typer.Option(DEFAULT_TRIALS, "--trials",
                               help="MetaSchedule's budget of measured candidates (with --tune)."),
    retune: bool = typer.Option(False, "--retune", help="With --tune: tune kernels that already have records "
                                                        "too (a longer search; the best record wins)."),
    cpu: str | None = typer.Option(None, "--cpu", help="LLVM CPU to tune the host code for (x86_64 default: "
                                                          "this machine's; aarch64: generic NEON)."),
    gpu_arch: str | None = typer.Option(None, "--gpu-arch", help="CUDA compute capability (default sm_80)."),
    sample: Path | None = typer.Option(None, "--sample", help="Feature rows (parquet/CSV) for the parity check "
                                                                 "(default: the version's held-out rows)."),
    expires_days: float = typer.Option(90.0, "--expires-days", min=0.01, help="Days until devices refuse it."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Compile a registered version for a target into a signed bundle, checked against ONNX Runtime."""

    options = CompileOptions(target=target, tune=tune, trials=trials, retune=retune, cpu=cpu, gpu_arch=gpu_arch,
                             sample=sample, expires_days=expires_days)
    respond(workspace, as_json, lambda ws: compile_version(ws, model, options, progress=progress), _render_compiled)


def _render_compiled(result: CompileResult) -> None:
    out.print(f"compiled {result.model} for {result.target} in {result.seconds:.1f} s: {result.id}", markup=False)
    if result.parity:
        out.print(f"  parity with ONNX Runtime: max |diff| {result.parity.max_abs_diff:.2e} on "
                  f"{result.parity.rows} rows", markup=False)
    if result.tuning:
        t = result.tuning
        left = f", {len(t.untuned)} left on TVM's default schedule" if t.untuned else ""
        done = f"{len(t.tuned)} kernel(s) tuned with {t.trials} trials in {t.seconds:.0f} s, " \
            if t.tuned else "nothing to tune, "
        out.print(f"  tuning: {done}{len(t.reused)} kernel(s) reused from {t.database}{left}", markup=False)
    for note in result.notes:
        out.print(f"  note: {note}", markup=False)
    out.print(f"  bundle: {result.path}", markup=False)
    out.print(f"  MLflow run: {result.mlflow_run_id}", markup=False)


@app.command("list")
def list_(workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Every compiled bundle, newest first: model, target, created, expiry, published."""

    respond(workspace, as_json, list_artifacts, _render_artifacts)


def _render_artifacts(items: list[ArtifactInfo]) -> None:
    if not items:
        out.print("no compiled artifacts yet (`kiln compile MODEL --target x86_64`)")
    for a in items:
        state = "latest" if a.latest else ("published" if a.published else "-")
        out.print(f"{a.id:<52} {a.model:<10} {a.target:<8} {state:<9} expires {a.expires[:19]}  "
                  f"{a.bytes / 1024:.0f} KiB", markup=False)


@app.command("verify")
def verify(
    ids: list[str] = typer.Argument(None, help="Artifact ids (see `kiln artifacts list`)."),
    all_: bool = typer.Option(False, "--all", help="Every compiled artifact."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Check signature, every file's sha256 and expiry; exits 1 when any artifact fails."""

    if all_ == bool(ids):
        raise InputError("give artifact ids or --all (not both)")
    verdicts = respond(workspace, as_json, lambda ws: verify_artifacts(ws, None if all_ else list(ids)),
                       _render_verdicts)
    if not all(v.ok for v in verdicts):
        raise typer.Exit(1)


def _render_verdicts(verdicts: list[Verdict]) -> None:
    for v in verdicts:
        out.print(f"{v.id}: {'ok' if v.ok else 'FAILED: ' + '; '.join(v.problems)}", markup=False)


@app.command("publish")
def publish(
    ids: list[str] = typer.Argument(..., help="Artifact ids to publish to the distribution point."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Verify and copy bundles to the distribution point `kiln up` serves; each becomes its target's latest."""

    respond(workspace, as_json, lambda ws: publish_artifacts(ws, ids), _render_published)


def _render_published(results: list[Published]) -> None:
    for r in results:
        where = "now latest" if r.latest else f"kept; {r.newer_latest} is newer and stays latest"
        out.print(f"published {r.id} for {r.target} ({where}): {r.location}", markup=False)
