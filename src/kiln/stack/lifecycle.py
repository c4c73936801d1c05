"""A workspace's local processes as one: the stack's services, the deployed endpoints and the monitor schedules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from kiln.errors import InputError
from kiln.monitoring.schedule import schedule_services
from kiln.process import ServiceSpec, ServiceState, start_all, status, stop_all
from kiln.progress import Progress, no_progress
from kiln.serving.local import all_services, list_endpoints
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


@dataclass
class Selection:
    """The processes named to `up` or `down` (all when no name is given): stack services, endpoints, schedules."""

    services: list[ServiceSpec]
    endpoints: list[str]
    schedules: list[ServiceSpec]


def select(ws: Workspace, names: Sequence[str] = ()) -> Selection:
    """Every process when ``names`` is empty, else those named as `kiln status` names them; an endpoint's front
    (`endpoint-NAME`) brings its variants along. An unknown name is refused, naming the known ones."""
    stack, endpoints, schedules = local_services(ws), list_endpoints(ws), schedule_services(ws)
    if not names:
        return Selection(stack, endpoints, schedules)
    known = [s.name for s in stack] + [f"endpoint-{e}" for e in endpoints] + [s.name for s in schedules]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(f"no local process named {', '.join(unknown)}", hint=f"known here: {', '.join(known)}")
    return Selection([s for s in stack if s.name in names], [e for e in endpoints if f"endpoint-{e}" in names],
                     [s for s in schedules if s.name in names])


def bring_up(ws: Workspace, progress: Progress = no_progress, names: Sequence[str] = ()) -> StackState:
    """Start the stack's services, the deployed endpoints and the monitor schedules (or those ``names`` selects), side
    by side; running ones are left as is."""
    chosen = select(ws, names)
    specs = [*chosen.services, *all_services(ws, chosen.endpoints), *chosen.schedules]
    states = []
    for state, started in start_all(ws.state_dir, specs, progress):
        if not started:
            progress(f"{state.name}: already running at {state.url}")
        states.append(state)
    return StackState(str(ws.root), states)


def stack_state(ws: Workspace) -> StackState:
    """Every local process the workspace defines, as it is now."""
    specs = [*local_services(ws), *all_services(ws), *schedule_services(ws)]
    return StackState(str(ws.root), [status(ws.state_dir, spec) for spec in specs])


def bring_down(ws: Workspace, names: Sequence[str] = ()) -> Stopped:
    """Stop them all (or those ``names`` selects); endpoints and schedules stay defined, and the next `bring_up`
    starts them again."""
    chosen = select(ws, names)
    specs = [*chosen.schedules, *all_services(ws, chosen.endpoints), *reversed(chosen.services)]
    return Stopped(str(ws.root), stop_all(ws.state_dir, specs))
