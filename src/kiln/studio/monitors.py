"""The Monitors page: per endpoint, its monitor runs over time, the latest violations, Evidently's reports and the
schedule that runs it; and one endpoint's monitoring with a longer history (monitor_detail).

Read from what the monitor job writes (WS/reports/monitor/ENDPOINT/RUN/: result.json, report.html and Evidently's
data_drift.html and model_quality.html) and from the schedules' files (WS/monitoring/schedules). Nothing is imported
from Evidently and no scheduler is asked over HTTP.

Bounded: run folders are named by the end of their window, so the newest are found from a folder listing and only
those are read; older ones are counted, not read. The page reads the newest ``runs_per_endpoint`` runs of each endpoint
(at most ``runs_read`` over the whole page, shared among the endpoints); monitor_detail the newest ``runs`` of one.
The latest violations are those of the newest run read that had data, at most VIOLATIONS_SHOWN of them (with their
total).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kiln.monitoring.endpoint import reports_folder
from kiln.monitoring.run import REPORT_FILE, RESULT_FILE
from kiln.monitoring.schedule import Schedule, read_schedule, schedule_file, schedules_folder, service, state_file
from kiln.monitoring.violations import MONITORS, Violation
from kiln.process import running
from kiln.workspace import Workspace

RUNS_PER_ENDPOINT = 5  # runs of each endpoint the page reads in full
RUNS_READ = 500  # runs the page reads in full, shared among the endpoints
DETAIL_RUNS = 100  # runs of one endpoint monitor_detail reads in full
VIOLATIONS_SHOWN = 50  # of the latest run with data
# Evidently's own pages a run with data saves beside its report (kiln.monitoring.run), with the title each is shown by.
EVIDENTLY_REPORTS = (("data_drift.html", "Evidently data drift"), ("model_quality.html", "Evidently model quality"))


@dataclass(frozen=True)
class DriftScore:
    """One feature's drift in a run: the distance from the baseline, the method that measured it, its threshold."""

    feature: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class MonitorFinding:
    """One of a run's monitors (data quality, data drift, model quality, bias drift, attribution drift): the
    violations it raised, or the note saying why it judged nothing (too few rows, no labels)."""

    monitor: str
    violations: int
    note: str | None


@dataclass(frozen=True)
class ReportLink:
    """A report file a run wrote: what it is and its path (for the console to serve or link)."""

    title: str
    path: str


@dataclass(frozen=True)
class MonitorRunRow:
    """One monitor run: its window and outcome, each monitor's share, drift per feature and its reports."""

    run: str
    finished: datetime  # UTC
    since: datetime | None  # the window's start; None: from the first captured request
    until: datetime  # the window's end
    status: str  # ok | violations | no_data
    model: str  # NAME/VERSION the endpoint served
    rows: int
    violations: int
    monitors: tuple[MonitorFinding, ...]  # empty when the window had no data
    drift: tuple[DriftScore, ...]  # empty when the run measured no drift
    report: str | None  # Kiln's report.html; None when the window had no data
    evidently_reports: tuple[ReportLink, ...]  # Evidently's HTML reports saved beside it
    folder: str
    message: str | None  # why there was no data


@dataclass(frozen=True)
class ScheduleRow:
    """The schedule that runs an endpoint's monitor, and what its scheduler process last wrote."""

    every: str  # as given: 30s, 15m, 1h, 1d
    every_seconds: float
    state: str  # running | stopped (the scheduler process; `kiln up` starts stopped ones again)
    next_run: datetime | None  # the scheduler's next tick; None while it does not run or before its first write
    runs: int  # runs the running scheduler made since it started
    last_status: str | None  # ok | violations | no_data | failed
    last_error: str | None
    webhooks: int
    on_violation: str | None  # retrain, or None


@dataclass(frozen=True)
class EndpointMonitors:
    """An endpoint's monitoring: runs (newest first, the newest read in full), latest violations, schedule."""

    endpoint: str
    runs: tuple[MonitorRunRow, ...]  # newest first
    runs_total: int  # run folders, read or not
    not_read: int  # older run folders, counted only
    latest_violations: tuple[Violation, ...]  # of the newest run read that had data; at most VIOLATIONS_SHOWN
    latest_violations_total: int
    latest_violations_run: str | None  # the run they come from
    schedule: ScheduleRow | None
    evidently_project: str | None  # the Evidently UI's page of the endpoint's project (served by `kiln up`)
    unfinished: int  # run folders without result.json: a run under way, or one stopped before it ended
    unreadable: int  # run records that could not be read (damaged or of an unknown shape)

    @property
    def latest(self) -> MonitorRunRow | None:
        return self.runs[0] if self.runs else None


@dataclass(frozen=True)
class MonitorsPage:
    """Every endpoint that has monitor runs or a schedule, by name."""

    endpoints: tuple[EndpointMonitors, ...]
    evidently_ui: str | None  # the Evidently UI's address (None: not known, on a cluster)
    unreadable: int  # unreadable run records and schedule files over the page

    @property
    def runs_total(self) -> int:
        return sum(e.runs_total for e in self.endpoints)


def monitors_page(ws: Workspace, runs_per_endpoint: int = RUNS_PER_ENDPOINT, runs_read: int = RUNS_READ) -> MonitorsPage:
    """The Monitors page of ``ws``; empty for a workspace that has monitored nothing.

    Bounded: the newest ``runs_per_endpoint`` runs of each endpoint are read, at most ``runs_read`` over the page
    (shared among the endpoints, at least one each); older runs are only counted from the folder listing.
    """
    ui = _evidently_ui(ws)
    runs_root = ws.folder("reports") / "monitor"  # where reports_folder(ws, ENDPOINT) puts each endpoint's runs
    run_names = {name: _run_names(reports_folder(ws, name)) for name in _subfolders(runs_root)}
    schedules, bad_schedules = _schedules(ws)
    names = sorted({*run_names, *schedules})
    per_endpoint = max(1, min(runs_per_endpoint, runs_read // max(1, len(run_names))))
    endpoints = [_endpoint(reports_folder(ws, name), run_names.get(name, []), per_endpoint, schedules.get(name), ui)
                 for name in names]
    return MonitorsPage(tuple(endpoints), ui, bad_schedules + sum(e.unreadable for e in endpoints))


def monitor_detail(ws: Workspace, endpoint: str, runs: int = DETAIL_RUNS) -> EndpointMonitors | None:
    """One endpoint's monitoring with its newest ``runs`` read in full (older ones counted); None when it has no runs
    and no schedule."""
    if not endpoint or "/" in endpoint or endpoint.startswith("."):
        return None  # not an endpoint's name (they are checked when deployed)
    folder = reports_folder(ws, endpoint)
    names = _run_names(folder)
    schedule: ScheduleRow | None = None
    if schedule_file(ws, endpoint).is_file():
        try:
            found = read_schedule(ws, endpoint)
            schedule = _schedule_row(ws, found) if found is not None else None
        except (OSError, ValueError, TypeError, AttributeError):  # a damaged schedule file: shown without it
            schedule = None
    if not names and schedule is None:
        return None
    return _endpoint(folder, names, max(1, runs), schedule, _evidently_ui(ws))


def _evidently_ui(ws: Workspace) -> str | None:
    """Where a browser reaches Evidently's UI: settings' studio.evidently_url, else `kiln up`'s on this machine."""
    if ws.settings.studio.evidently_url or ws.settings.serving.type == "kserve":
        return ws.settings.studio.evidently_url
    return f"http://{ws.settings.services.evidently.host}:{ws.settings.services.evidently.port}"


def _subfolders(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    except OSError:  # no such folder yet: nothing was monitored
        return []


def _run_names(endpoint_folder: Path) -> list[str]:
    """The names of the endpoint's run folders, newest first: run_monitor names a run monitor-UNTIL-ID, UNTIL as
    20261122T100000 (names only: thousands of them are listed, a few read)."""
    try:
        return sorted((n for n in os.listdir(endpoint_folder) if n.startswith("monitor-")), reverse=True)
    except OSError:  # no runs yet (an endpoint with a schedule only)
        return []


def _endpoint(endpoint_folder: Path, names: list[str], per_endpoint: int, schedule: ScheduleRow | None,
              ui: str | None) -> EndpointMonitors:
    import orjson  # result.json is MonitorRun.to_dict (there is no reader of it to reuse); orjson parses it 2x faster

    rows: list[MonitorRunRow] = []
    latest: list[Violation] | None = None
    latest_run: str | None = None
    project: str | None = None
    unfinished = unreadable = 0
    for folder in (endpoint_folder / n for n in names[:per_endpoint]):
        try:
            data = orjson.loads((folder / RESULT_FILE).read_bytes())
        except FileNotFoundError:
            unfinished += 1
            continue
        except (OSError, ValueError):
            unreadable += 1
            continue
        try:
            row, violations = _run_row(folder, data)
        except (KeyError, TypeError, ValueError, AttributeError):
            unreadable += 1
            continue
        rows.append(row)
        if latest is None and row.status != "no_data":
            latest, latest_run = violations, row.run
        if project is None and isinstance(data.get("evidently_project"), str):
            project = data["evidently_project"]
    shown = latest or []
    return EndpointMonitors(
        endpoint=endpoint_folder.name, runs=tuple(rows), runs_total=len(names),
        not_read=max(0, len(names) - per_endpoint),
        latest_violations=tuple(shown[:VIOLATIONS_SHOWN]), latest_violations_total=len(shown),
        latest_violations_run=latest_run, schedule=schedule,
        evidently_project=f"{ui}/projects/{project}" if project and ui else None, unfinished=unfinished,
        unreadable=unreadable)


def _run_row(folder: Path, data: dict[str, Any]) -> tuple[MonitorRunRow, list[Violation]]:
    """A run's row and violations from its result.json."""
    violations = [Violation(**v) for v in data["violations"]]
    monitors: dict[str, Any] = data.get("monitors") or {}
    counts = {m: sum(1 for v in violations if v.monitor == m) for m in MONITORS}
    findings = tuple(MonitorFinding(m, counts[m], (monitors.get(m) or {}).get("note")) for m in MONITORS
                     if m in monitors)
    columns = (monitors.get("data_drift") or {}).get("columns") or []
    drift = tuple(DriftScore(str(c["feature"]), str(c["method"]), float(c["score"]), float(c["threshold"]),
                             bool(c["drifted"])) for c in columns)
    window = data["window"]
    base = str(folder)  # paths as text: os.path's calls are several times cheaper than pathlib's, and a page makes 500
    report = os.path.join(base, REPORT_FILE)
    evidently = tuple(ReportLink(title, path) for title, path in
                      ((title, os.path.join(base, name)) for name, title in EVIDENTLY_REPORTS) if os.path.isfile(path))
    row = MonitorRunRow(
        run=str(data["run"]), finished=datetime.fromtimestamp(float(data["finished_unix"]), UTC),
        since=_when(window["since"]) if window["since"] else None, until=_when(window["until"]),
        status=str(data["status"]), model=str(data["model"]), rows=int(data["rows"]), violations=len(violations),
        monitors=findings, drift=drift, report=report if os.path.isfile(report) else None,
        evidently_reports=evidently, folder=base,
        message=str(data["message"]) if data.get("message") is not None else None)
    return row, violations


def _when(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _schedules(ws: Workspace) -> tuple[dict[str, ScheduleRow], int]:
    """Each endpoint's schedule with its scheduler's state, and the count of schedule files that do not read."""
    out: dict[str, ScheduleRow] = {}
    unreadable = 0
    folder = schedules_folder(ws)
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.name.endswith(".state.json"):
            continue
        try:
            schedule = read_schedule(ws, path.stem)
            if schedule is not None:
                out[schedule.endpoint] = _schedule_row(ws, schedule)
        except (OSError, ValueError, TypeError, AttributeError):  # damaged, or not a schedule's fields
            unreadable += 1
    return out, unreadable


def _schedule_row(ws: Workspace, schedule: Schedule) -> ScheduleRow:
    # The scheduler's pid record, not kiln.process.status: that one asks each scheduler over HTTP (up to 2 s each).
    alive = running(ws.state_dir, service(ws, schedule).name)
    last: dict[str, Any] = {}
    try:  # the state file the scheduler writes (kiln.monitoring.scheduler); list_schedules reads it with the probe
        found = json.loads(state_file(ws, schedule.endpoint).read_text())
        last = found if isinstance(found, dict) else {}
    except (OSError, ValueError):
        pass  # before its first write, or torn: the schedule is shown without it
    next_run: datetime | None = None
    if alive and isinstance(last.get("next_run"), str):
        try:
            next_run = _when(last["next_run"])
        except ValueError:
            next_run = None
    return ScheduleRow(
        every=schedule.every, every_seconds=schedule.every_seconds, state="running" if alive else "stopped",
        next_run=next_run, runs=last["runs"] if alive and isinstance(last.get("runs"), int) else 0,
        last_status=last.get("last_status") if isinstance(last.get("last_status"), str) else None,
        last_error=last.get("last_error") if isinstance(last.get("last_error"), str) else None,
        webhooks=len(schedule.webhooks), on_violation=schedule.on_violation)
