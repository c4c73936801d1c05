"""`kiln up`, `kiln status`, `kiln down`: the local services of a workspace."""

from __future__ import annotations

from pathlib import Path

import typer

from kiln.cli.command import WorkspaceOption, respond
from kiln.cli.output import JsonOption, out, progress
from kiln.stack.lifecycle import StackState, Stopped, bring_down, bring_up, stack_state


def _render_states(state: StackState) -> None:
    width = max((len(s.name) for s in state.services), default=10)
    for s in state.services:
        colour = {"running": "green", "unhealthy": "yellow"}.get(s.state, "red")
        pid = f" pid {s.pid}" if s.pid else ""
        out.print(f"{s.name:<{width}} [{colour}]{s.state:<9}[/{colour}] {s.url}{pid}  log: {s.log}")


def _render_stopped(result: Stopped) -> None:
    out.print(f"stopped: {', '.join(result.stopped)}" if result.stopped else "nothing was running")


NAMES_HELP = "Only these processes, as `kiln status` names them (an endpoint's front brings its variants along)."


def up(names: list[str] = typer.Argument(None, help=NAMES_HELP, metavar="[NAME]...", show_default=False),
       workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Start the local services (MLflow UI, ...), deployed endpoints and monitor schedules on loopback (all, or those
    named); running ones are left as is."""
    respond(workspace, as_json, lambda ws: bring_up(ws, progress, names or ()), _render_states, local=True,
            engines=False)


def status(workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Show each local service: running or not, URL, pid and log file."""
    respond(workspace, as_json, stack_state, _render_states, local=True, engines=False)


def down(names: list[str] = typer.Argument(None, help=NAMES_HELP, metavar="[NAME]...", show_default=False),
         workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Stop the local services, the deployed endpoints' processes and the monitor schedules (all, or those named)."""
    respond(workspace, as_json, lambda ws: bring_down(ws, names or ()), _render_stopped, local=True, engines=False)
