"""The Endpoints page: each endpoint's variants and live shares, rollout, history, traffic over time, shadow and
capture. What the front knows live (shares, the last minute, 15 minutes of traffic) is asked of it, all fronts at once
with a short timeout, so a stopped endpoint shows as stopped rather than slowing the page."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.process import running
from kiln.serving.history import HistoryEntry
from kiln.serving.local import EndpointState, list_endpoints, read_state
from kiln.workspace import Workspace

if TYPE_CHECKING:
    import httpx

LIVE_TIMEOUT = 0.5  # seconds a front has to answer before its endpoint is shown as not answering
HISTORY_SHOWN = 50  # the newest entries of an endpoint's history on its page


@dataclass(frozen=True)
class VariantView:
    name: str
    model: str
    runtime: str
    role: str  # production, shadow, candidate (a rollout's new model)
    share: float | None  # of production traffic, live; None while the front does not answer
    requests_per_second: float | None = None
    errors: int | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None


@dataclass(frozen=True)
class EndpointRow:
    name: str
    url: str
    answering: bool
    variants: list[VariantView]
    rollout: str | None  # "PHASE: reason" while one is under way
    history: list[HistoryEntry]
    capture_written: int | None = None  # records the front has written since it started
    capture_dropped: int | None = None
    problem: str | None = None  # why the endpoint could not be read
    paused: bool = False  # the rollout under way is held where it is
    queue: str | None = None  # an asynchronous endpoint's queue: its backlog and workers, live

    @property
    def shadow(self) -> VariantView | None:
        return next((v for v in self.variants if v.role == "shadow"), None)


@dataclass(frozen=True)
class EndpointsPage:
    endpoints: list[EndpointRow]


@dataclass(frozen=True)
class EndpointDetail:
    endpoint: EndpointRow
    series: dict[str, list[dict[str, Any]]]  # per variant: 10-second points over 15 minutes (kiln.serving.window)
    capture_bytes: int
    capture_files: int
    rollout_history: list[dict[str, Any]] = field(default_factory=list)  # the front's steps of its last rollout


async def endpoints_page(ws: Workspace) -> EndpointsPage:
    """Every local endpoint, by name."""
    names = list_endpoints(ws)
    states = [_state(ws, n) for n in names]
    up = [running(ws.state_dir, f"endpoint-{n}") for n in names]  # a stopped front is not asked
    async with _client() as client:
        lives = await asyncio.gather(*(_ask(client, ws, s, "/kiln/status") if u else _none()
                                       for s, u in zip(states, up)))
    return EndpointsPage([_row(ws, n, s, live) for n, s, live in zip(names, states, lives)])


async def endpoint_detail(ws: Workspace, name: str) -> EndpointDetail | None:
    """One endpoint with its traffic over time; None when there is no such endpoint."""
    if name not in list_endpoints(ws):
        return None

    state = _state(ws, name)
    if not running(ws.state_dir, f"endpoint-{name}"):
        live, series = None, None
    else:
        async with _client() as client:
            live, series = await asyncio.gather(_ask(client, ws, state, "/kiln/status"),
                                                _ask(client, ws, state, "/kiln/series"))
    row = _row(ws, name, state, live, history=None)
    rollout = (live or {}).get("rollout") or {}
    files, size = capture_size(ws, name)
    return EndpointDetail(row, (series or {}).get("variants", {}), size, files, rollout.get("history", []))


def _state(ws: Workspace, name: str) -> EndpointState | str:
    try:
        return read_state(ws, name)
    except Exception as exc:  # noqa: BLE001 - any unreadable state is shown as the endpoint's problem
        return f"{type(exc).__name__}: {exc}"


def _client() -> httpx.AsyncClient:
    """One client for a page's questions to fronts on loopback: plain HTTP, so no certificates are loaded (loading
    them took tens of milliseconds a page)."""
    import httpx

    return httpx.AsyncClient(timeout=LIVE_TIMEOUT, verify=False, trust_env=False)


async def _none() -> None:
    return None


async def _ask(client: httpx.AsyncClient, ws: Workspace, state: EndpointState | str, path: str) -> dict[str, Any] | None:
    import httpx

    if isinstance(state, str):
        return None
    try:
        res = await client.get(f"http://{_host(ws)}:{state.router_port}{path}")
        return res.json() if res.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def _row(ws: Workspace, name: str, state: EndpointState | str, live: dict[str, Any] | None,
         history: int | None = HISTORY_SHOWN) -> EndpointRow:
    if isinstance(state, str):
        return EndpointRow(name, "", False, [], None, [], problem=state)
    shares: dict[str, float] = (live or {}).get("shares") or {}
    stats: dict[str, dict[str, Any]] = (live or {}).get("variants") or {}
    variants = []
    for vname, record in state.variants.items():
        variants.append(_variant(vname, record.model, record.runtime, record.role, shares, stats, live is not None))
    if state.rollout is not None:
        r = state.rollout
        variants.append(_variant(r.candidate, r.model, r.runtime, "candidate", shares, stats, live is not None))
    report = (live or {}).get("rollout")
    if report and report.get("done"):
        report = None  # the front still describes its last rollout once it has ended
    rollout = f"{report['phase']}{' (paused)' if report.get('paused') else ''}: {report['reason']}" if report else (
        f"{state.rollout.candidate} pending" if state.rollout else None)
    capture = (live or {}).get("capture") or {}
    entries = list(reversed(state.history))
    queue = None
    if state.spec.mode == "async":
        queue = (f"asynchronous: {live.get('backlog') or 0} waiting, {live.get('workers') or 0} workers, "
                 f"{live.get('accepted', 0)} accepted" if live else "asynchronous")
    return EndpointRow(name=name, url=f"http://{_host(ws)}:{state.router_port}", answering=live is not None,
                       variants=variants, rollout=rollout, history=entries[:history] if history else entries,
                       capture_written=capture.get("written"), capture_dropped=capture.get("dropped"),
                       paused=bool(report and report.get("paused")), queue=queue)


def _variant(name: str, model: str, runtime: str, role: str, shares: dict[str, float],
             stats: dict[str, dict[str, Any]], answering: bool) -> VariantView:
    s = stats.get(name) or {}
    share = shares.get(name, 0.0) if answering and role != "shadow" and shares else None
    return VariantView(name, model.removeprefix("models:/"), runtime, role, share, s.get("requests_per_second"),
                       s.get("errors"), s.get("p50_ms"), s.get("p99_ms"))


def _host(ws: Workspace) -> str:
    serving = ws.settings.serving
    return getattr(serving, "host", "127.0.0.1")


def capture_size(ws: Workspace, name: str) -> tuple[int, int]:
    """Files and bytes of the endpoint's capture in the local capture store (0, 0 on S3: not listed here)."""
    if ws.settings.capture.type != "local":
        return 0, 0
    files = size = 0
    for hour in (Path(ws.settings.capture.path) / f"endpoint={name}").glob("hour=*"):
        with os.scandir(hour) as entries:
            for e in entries:
                files += 1
                size += e.stat().st_size
    return files, size
