"""`kiln compile` and `kiln artifacts ...`: Neo on TVM, signed bundles, and their distribution point."""

from __future__ import annotations

from pathlib import Path

import typer

from kiln.cli.command import WorkspaceOption
from kiln.cli.output import JsonOption, engine_output, out, print_json, progress
from kiln.compile.compiler import CompileOptions, compile_version
from kiln.compile.store import list_artifacts, publish_artifact, verify_artifacts
from kiln.compile.tuning import DEFAULT_TRIALS
from kiln.errors import InputError
from kiln.workspace import open_workspace

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

    ws = open_workspace(workspace)
    options = CompileOptions(target=target, tune=tune, trials=trials, retune=retune, cpu=cpu, gpu_arch=gpu_arch,
                             sample=sample, expires_days=expires_days)
    with engine_output():
        result = compile_version(ws, model, options, progress=progress)
    if as_json:
        print_json(result)
        return
    out.print(f"compiled {result.model} for {result.target} in {result.seconds:.1f} s: {result.id}", markup=False)
    if result.parity:
        out.print(f"  parity with ONNX Runtime: max |diff| {result.parity['max_abs_diff']:.2e} on "
                  f"{result.parity['rows']} rows", markup=False)
    if result.tuning:
        t = result.tuning
        left = f", {len(t['untuned'])} left on TVM's default schedule" if t["untuned"] else ""
        done = f"{len(t['tuned'])} kernel(s) tuned with {t['trials']} trials in {t['seconds']:.0f} s, " \
            if t["tuned"] else "nothing to tune, "
        out.print(f"  tuning: {done}{len(t['reused'])} kernel(s) reused from {t['database']}{left}", markup=False)
    for note in result.notes:
        out.print(f"  note: {note}", markup=False)
    out.print(f"  bundle: {result.path}", markup=False)
    out.print(f"  MLflow run: {result.mlflow_run_id}", markup=False)


@app.command("list")
def list_(workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Every compiled bundle, newest first: model, target, created, expiry, published."""

    items = list_artifacts(open_workspace(workspace))
    if as_json:
        print_json(items)
        return
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

    ws = open_workspace(workspace)
    if all_ == bool(ids):
        raise InputError("give artifact ids or --all (not both)")
    verdicts = verify_artifacts(ws, [a.id for a in list_artifacts(ws)] if all_ else list(ids))
    if as_json:
        print_json([{"id": v.id, "ok": v.ok, "problems": v.problems} for v in verdicts])
    else:
        for v in verdicts:
            out.print(f"{v.id}: {'ok' if v.ok else 'FAILED: ' + '; '.join(v.problems)}", markup=False)
    if not all(v.ok for v in verdicts):
        raise typer.Exit(1)


@app.command("publish")
def publish(
    ids: list[str] = typer.Argument(..., help="Artifact ids to publish to the distribution point."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Verify and copy bundles to the distribution point `kiln up` serves; each becomes its target's latest."""

    ws = open_workspace(workspace)
    with engine_output():
        results = [publish_artifact(ws, i) for i in ids]
    if as_json:
        print_json(results)
        return
    for r in results:
        where = "now latest" if r["latest"] else f"kept; {r['newer_latest']} is newer and stays latest"
        out.print(f"published {r['id']} for {r['target']} ({where}): {r['path']}", markup=False)
