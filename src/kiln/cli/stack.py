"""`kiln up`, `kiln status`, `kiln down`: the local services of a workspace."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kiln.cli.command import WorkspaceOption, local_workspace
from kiln.cli.output import JsonOption, out, print_json, progress
from kiln.monitoring.schedule import schedule_services
from kiln.serving.local import all_services, start_deployed
from kiln.stack import local_services, start, stop
from kiln.stack import status as service_status

if TYPE_CHECKING:
    from kiln.stack import ServiceState

def _show(states: "list[ServiceState]", as_json: bool, root: Path) -> None:
    if as_json:
        print_json({"workspace": str(root), "services": [{**s.__dict__} for s in states]})
        return
    width = max((len(s.name) for s in states), default=10)
    for s in states:
        colour = {"running": "green", "unhealthy": "yellow"}.get(s.state, "red")
        pid = f" pid {s.pid}" if s.pid else ""
        out.print(f"{s.name:<{width}} [{colour}]{s.state:<9}[/{colour}] {s.url}{pid}  log: {s.log}")


def up(workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Start the local services (MLflow UI, ...) and deployed endpoints on loopback; running ones are left as is."""

    ws = local_workspace(workspace)
    states = []
    for spec in local_services(ws):
        state, started = start(ws.state_dir, spec, progress)
        if not started:
            progress(f"{spec.name}: already running at {state.url}")
        states.append(state)

    states += start_deployed(ws, progress)

    for spec in schedule_services(ws):  # monitor schedules run again where they were
        states.append(start(ws.state_dir, spec, progress)[0])
    _show(states, as_json, ws.root)


def status(workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Show each local service: running or not, URL, pid and log file."""

    ws = local_workspace(workspace)
    specs = [*local_services(ws), *all_services(ws), *schedule_services(ws)]
    _show([service_status(ws.state_dir, spec) for spec in specs], as_json, ws.root)


def down(workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Stop the local services and the deployed endpoints' processes of the workspace."""

    ws = local_workspace(workspace)
    # Endpoints and schedules stop too; they stay defined, and the next `kiln up` starts them again.
    specs = [*schedule_services(ws), *all_services(ws), *reversed(local_services(ws))]
    stopped = [spec.name for spec in specs if stop(ws.state_dir, spec)]
    if as_json:
        print_json({"workspace": str(ws.root), "stopped": stopped})
        return
    out.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
