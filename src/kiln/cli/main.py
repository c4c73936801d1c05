"""The `kiln` command: `kiln NOUN VERB`, Typer and Rich; engines are imported only where used."""

from __future__ import annotations

import contextlib
import contextvars
import faulthandler
import io
import os
import signal
import sys
from pathlib import Path

import typer
from typer._click import exceptions as click_errors  # Typer's own copy of Click

from kiln import __version__
from kiln.cli import clarify, compile, data, edge, endpoint, features, models, monitor, pipeline, stack, training
from kiln.cli.command import WorkspaceOption, show
from kiln.cli.output import JsonOption, engine_output, err, out, print_json, progress, to_plain
from kiln.demo import MainJob, main_job
from kiln.doctor import Check, Diagnosis, diagnose
from kiln.errors import INTERNAL_ERROR_EXIT, INTERRUPTED_EXIT, InputError, KilnError, ValidationFailed
from kiln.workspace import NewWorkspace, find_workspace_root, init_workspace

_debug: contextvars.ContextVar[bool] = contextvars.ContextVar("kiln_debug", default=False)  # --debug given

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
    _debug.set(debug)


@app.command("init")
def init(
    directory: Path = typer.Argument(Path("."), help="Workspace folder to create (default: here)."),
    profile: str = typer.Option("local", help="local (embedded stores) or cluster."),
    as_json: bool = JsonOption,
) -> None:
    """Create a workspace: kiln.yaml and folders for data, features, models, artifacts, capture, reports."""
    show(init_workspace(directory, profile), as_json, _render_init)


def _render_init(made: NewWorkspace) -> None:
    ws, created = made
    out.print(f"workspace {ws.root} (profile {ws.settings.profile})")
    for path in created:
        out.print(f"  created {path}")
    if not created:
        out.print("  already complete; nothing changed")


def _show_check(check: Check) -> None:
    mark = "[green]ok[/green]  " if check.ok else "[red]FAIL[/red]"
    ver = f" {check.version}" if check.version else ""
    out.print(f"{mark} {check.kind:<9} {check.name}{ver}: {check.detail}")


def _render_problems(diagnosis: Diagnosis) -> None:
    problems = len(diagnosis.problems)
    if problems:
        err.print(f"[red]{problems} problem{'s' if problems > 1 else ''}[/red]")


@app.command("doctor")
def doctor(
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Check engines (importable, with versions), configured services (reachable) and free disk."""
    root = workspace.expanduser().resolve() if workspace else find_workspace_root()
    diagnosis = diagnose(root, (lambda _: None) if as_json else _show_check,
                         lambda: err.status("importing each engine in its own interpreter"))
    show(diagnosis, as_json, _render_problems)
    if not diagnosis.ok:
        raise typer.Exit(2)


def _render_main_job(run: MainJob) -> None:
    out.print(f"\n[bold]Kiln lifecycle on the local default[/bold] (workspace {run.workspace})")
    for r in run.steps:
        out.print(f"  {r.seconds:6.1f}s  {r.name}", markup=False)
        for key, value in r.outputs.items():
            if key != "engines":
                out.print(f"           {key}: {value}", markup=False)
    out.print(f"  {run.seconds:6.1f}s  total\n\n[bold]Next[/bold]")
    for key, value in run.summary.items():
        out.print(f"  {key}: {value}", markup=False)


@app.command("demo")
def demo(
    workspace: Path = typer.Option(Path("demo-workspace"), "--workspace", "-w", help="Workspace to run in "
                                   "(created if missing; the demo's dataset in it is replaced)."),
    as_json: bool = JsonOption,
) -> None:
    """The main job: Kiln's lifecycle end to end on the local embedded default."""
    with engine_output():
        run = main_job(workspace, lambda i, n, name: err.print(f"[bold]\\[{i}/{n}][/bold] {name}"), progress)
    show(run, as_json, _render_main_job)


def run(argv: list[str] | None = None) -> int:
    """Run `kiln` with ``argv`` (default: the process's arguments); errors become messages and the exit code.

    0 done, 1 bad input, 2 the environment or a service, 3 a compiled model that disagrees with its source, 4 a
    fault in Kiln itself (``--debug`` shows its traceback), 130 interrupted; a failed pipeline, its step's code.
    """
    args = sys.argv[1:] if argv is None else argv
    token = _debug.set(False)
    try:
        return _run(args)
    finally:
        _debug.reset(token)


def _run(args: list[str]) -> int:
    try:
        code = app(args=args, prog_name="kiln", standalone_mode=False)
    except KilnError as exc:
        if _debug.get() or os.environ.get("KILN_DEBUG"):
            raise
        if isinstance(exc, ValidationFailed) and "--json" in args:
            print_json({"valid": False, "problems": to_plain(exc.problems)})
        err.print("[red]error:[/red] ", end="")
        err.print(str(exc), markup=False)
        return exc.exit_code
    except click_errors.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else exc.format_message())
        return 0
    except click_errors.ClickException as exc:
        exc.show()
        return InputError.exit_code
    except typer.Abort:
        err.print("aborted")
        return InputError.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return INTERRUPTED_EXIT
    except Exception as exc:  # the last guard: a message and its own exit code, not a traceback
        if _debug.get() or os.environ.get("KILN_DEBUG"):
            raise
        err.print("[red]internal error:[/red] ", end="")
        err.print(f"{type(exc).__name__}: {exc}\n  hint: a fault in Kiln, not in what you gave it; run again with "
                  "--debug for the traceback, and report it", markup=False)
        return INTERNAL_ERROR_EXIT
    return code if isinstance(code, int) else 0


def main() -> None:
    """Console entry point: `kill -USR1 PID` prints every thread's stack to stderr (how a stuck command is
    diagnosed), then `run` with the process's arguments."""
    with contextlib.suppress(io.UnsupportedOperation, AttributeError, ValueError):  # stderr with no descriptor
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    sys.exit(run())
