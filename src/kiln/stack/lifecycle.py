"""A workspace's local processes as one: the stack's services, the deployed endpoints and the monitor schedules."""

from __future__ import annotations

from dataclasses import dataclass, field

from kiln.monitoring.schedule import schedule_services
from kiln.process import ServiceState, start, status, stop
from kiln.progress import Progress, no_progress
from kiln.serving.local import all_services, start_deployed
from kiln.stack.services import local_services
from kiln.workspace import Workspace


@dataclass
class StackState:
    """Each local process of the workspace: running or not, URL, pid and log file."""

    workspace: str
    services: list[ServiceState] = field(default_factory=list)


@dataclass
class Stopped:
    """The processes `down` stopped."""

    workspace: str
    stopped: list[str] = field(default_factory=list)


def bring_up(ws: Workspace, progress: Progress = no_progress) -> StackState:
    """Start the stack's services, the deployed endpoints and the monitor schedules; running ones are left as is."""
    states = []
    for spec in local_services(ws):
        state, started = start(ws.state_dir, spec, progress)
        if not started:
            progress(f"{spec.name}: already running at {state.url}")
        states.append(state)
    states += start_deployed(ws, progress)
    for spec in schedule_services(ws):  # monitor schedules run again where they were
        states.append(start(ws.state_dir, spec, progress)[0])
    return StackState(str(ws.root), states)


def stack_state(ws: Workspace) -> StackState:
    """Every local process the workspace defines, as it is now."""
    specs = [*local_services(ws), *all_services(ws), *schedule_services(ws)]
    return StackState(str(ws.root), [status(ws.state_dir, spec) for spec in specs])


def bring_down(ws: Workspace) -> Stopped:
    """Stop them all; endpoints and schedules stay defined, and the next `bring_up` starts them again."""
    specs = [*schedule_services(ws), *all_services(ws), *reversed(local_services(ws))]
    return Stopped(str(ws.root), [spec.name for spec in specs if stop(ws.state_dir, spec)])
