"""The `kiln` command: `kiln NOUN VERB`, Typer and Rich; engines are imported only where used."""

from __future__ import annotations

import contextlib
import faulthandler
import io
import os
import signal
import sys
import time
from pathlib import Path

import typer

from kiln import __version__
from kiln.cli import clarify, compile, data, edge, endpoint, features, models, monitor, pipeline, stack, training
from kiln.cli.command import WorkspaceOption
from kiln.cli.output import JsonOption, engine_output, err, out, print_json, progress, to_plain
from kiln.demo import run_demo, summary
from kiln.doctor import Check, check_disk, check_engines, check_services
from kiln.errors import KilnError, ValidationFailed
from kiln.settings import load_settings
from kiln.workspace import find_workspace_root, init_workspace

app = typer.Typer(
    name="kiln",
    help="Kiln: SageMaker's ML lifecycle on open-source engines (Feast, MLflow, Ray Tune, KServe, Evidently, TVM).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain Click help: half the start-up time of Rich's panels
)
app.add_typer(data.app, name="data")
app.add_typer(features.app, name="features")
app.add_typer(models.app, name="models")
app.add_typer(clarify.app, name="clarify")
app.add_typer(endpoint.app, name="endpoint")
app.add_typer(compile.app, name="artifacts")
app.add_typer(edge.app, name="edge")
app.add_typer(monitor.app, name="monitor")
app.add_typer(pipeline.app, name="pipeline")
app.command("up")(stack.up)
app.command("status")(stack.status)
app.command("down")(stack.down)
app.command("train")(training.train)
app.command("tune")(training.tune)
app.command("batch-transform")(endpoint.batch_transform)
app.command("compile")(compile.compile_)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kiln {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
) -> None:
    if debug:
        os.environ["KILN_DEBUG"] = "1"


@app.command("init")
def init(
    directory: Path = typer.Argument(Path("."), help="Workspace folder to create (default: here)."),
    profile: str = typer.Option("local", help="local (embedded stores) or cluster."),
    as_json: bool = JsonOption,
) -> None:
    """Create a workspace: kiln.yaml and folders for data, features, models, artifacts, capture, reports."""

    ws, created = init_workspace(directory, profile)
    if as_json:
        print_json({"workspace": str(ws.root), "profile": ws.settings.profile, "created": created})
        return
    out.print(f"workspace {ws.root} (profile {ws.settings.profile})")
    for path in created:
        out.print(f"  created {path}")
    if not created:
        out.print("  already complete; nothing changed")


@app.command("doctor")
def doctor(
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Check engines (importable, with versions), configured services (reachable) and free disk."""

    root = workspace.expanduser().resolve() if workspace else find_workspace_root()
    checks: list[Check] = []

    def show(check: Check) -> None:
        if not as_json:
            mark = "[green]ok[/green]  " if check.ok else "[red]FAIL[/red]"
            ver = f" {check.version}" if check.version else ""
            out.print(f"{mark} {check.kind:<9} {check.name}{ver}: {check.detail}")

    with err.status("importing each engine in its own interpreter"):
        checks += check_engines(show)
    if root is None:
        settings = load_settings(Path.cwd())
        note = Check("workspace", "workspace", True, "none found; checking the local profile's defaults here")
    else:
        settings = load_settings(root)
        note = Check("workspace", "workspace", True, f"{root} (profile {settings.profile})")
    show(note)
    for check in [*check_services(settings), check_disk(settings.workspace)]:
        show(check)
        checks.append(check)
    checks.insert(0, note)
    problems = [c for c in checks if not c.ok]
    if as_json:
        print_json({"ok": not problems, "checks": checks})
    elif problems:
        err.print(f"[red]{len(problems)} problem{'s' if len(problems) > 1 else ''}[/red]")
    if problems:
        raise typer.Exit(2)


@app.command("demo")
def demo(
    workspace: Path = typer.Option(Path("demo-workspace"), "--workspace", "-w", help="Workspace to run in "
                                   "(created if missing; the demo's dataset in it is replaced)."),
    as_json: bool = JsonOption,
) -> None:
    """The main job: Kiln's lifecycle end to end on the local embedded default."""


    t0 = time.perf_counter()
    with engine_output():
        ctx = run_demo(workspace, lambda i, n, name: err.print(f"[bold]\\[{i}/{n}][/bold] {name}"), progress)
    total = time.perf_counter() - t0
    where = summary(ctx)
    if as_json:
        print_json({"workspace": str(ctx.root), "seconds": round(total, 2), "steps": ctx.results, "summary": where})
        return
    out.print(f"\n[bold]Kiln lifecycle on the local default[/bold] (workspace {ctx.root})")
    for r in ctx.results:
        out.print(f"  {r.seconds:6.1f}s  {r.name}", markup=False)
        for key, value in r.outputs.items():
            if key != "engines":
                out.print(f"           {key}: {value}", markup=False)
    out.print(f"  {total:6.1f}s  total\n\n[bold]Next[/bold]")
    for key, value in where.items():
        out.print(f"  {key}: {value}", markup=False)


def main() -> None:
    """Console entry point: runs the app and turns errors into messages and exit codes."""
    from typer._click import exceptions as click_errors  # Typer's own copy of Click

    # `kill -USR1 PID` prints every thread's stack to stderr: how a stuck command is diagnosed.
    with contextlib.suppress(io.UnsupportedOperation, AttributeError, ValueError):  # stderr with no descriptor
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        code = app(standalone_mode=False)
    except KilnError as exc:
        if os.environ.get("KILN_DEBUG"):
            raise
        if isinstance(exc, ValidationFailed) and "--json" in sys.argv:
            print_json({"valid": False, "problems": to_plain(exc.problems)})
        err.print("[red]error:[/red] ", end="")
        err.print(str(exc), markup=False)
        sys.exit(exc.exit_code)
    except click_errors.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else exc.format_message())
        sys.exit(0)
    except click_errors.ClickException as exc:
        exc.show()
        sys.exit(1)
    except typer.Abort:
        err.print("aborted")
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("KILN_DEBUG"):
            raise
        err.print("[red]internal error:[/red] ", end="")
        err.print(f"{type(exc).__name__}: {exc}\n  hint: run again with --debug for the traceback, and report it",
                  markup=False)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
