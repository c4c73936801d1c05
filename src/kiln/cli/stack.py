"""`kiln up`, `kiln status`, `kiln down`: the local services of a workspace."""

from __future__ import annotations

from pathlib import Path

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


def up(workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Start the local services (MLflow UI, ...) and deployed endpoints on loopback; running ones are left as is."""
    respond(workspace, as_json, lambda ws: bring_up(ws, progress), _render_states, local=True, engines=False)


def status(workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Show each local service: running or not, URL, pid and log file."""
    respond(workspace, as_json, stack_state, _render_states, local=True, engines=False)


def down(workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Stop the local services and the deployed endpoints' processes of the workspace."""
    respond(workspace, as_json, bring_down, _render_stopped, local=True, engines=False)
