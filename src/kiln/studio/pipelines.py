"""The Pipelines page: local pipeline runs, newest first, each with its steps and the outputs worth showing.

Read from what `kiln pipeline run` leaves in WS/pipelines/runs/RUN/ (kiln.workflow.local_run): run.json (the run and
its tasks' status and seconds, written when the run ends) and, per task, KFP's executor_output.json (the values it
returned and its artifacts: metrics in their metadata, HTML and Markdown reports and PNG plots as files). Runs
submitted to a KFP server are not here: they are in the KFP UI the page links to (settings' studio.kfp_ui).

Bounded: runs are ordered by the start time in their folder's name (KFP names a run PIPELINE-YYYY-MM-DD-HH-MM-SS-US),
so only the newest ``runs_shown`` are read, the older ones are counted; a task's report files are told apart by
their first bytes, at most SNIFF_BYTES each; returned values are shown up to VALUE_CHARS characters. No engine is
imported (KFP's own reader of executor_output.json needs KFP and its protobuf classes).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kiln.workflow.local_run import LocalRun, TaskRecord
from kiln.workspace import Workspace

RUNS_SHOWN = 50
SNIFF_BYTES = 64
VALUE_CHARS = 200
RUN_FILE, EXECUTOR_OUTPUT = "run.json", "executor_output.json"
UNFINISHED = "UNFINISHED"  # no run.json yet: the run is under way, or stopped before it ended
# KFP's run folder: the pipeline's name and its local start time; Kiln names a run that failed before any task wrote
# an output the same way without the microseconds, at the time it ended.
RUN_NAME = re.compile(r"^(?P<pipeline>.+)-(?P<stamp>\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d)(?P<micro>-\d{6})?$")
NO_REPORT = (b"<p>no report</p>", b"_no report_")  # what kiln.workflow.result writes for a step without a report


@dataclass(frozen=True)
class Metric:
    name: str
    value: float


@dataclass(frozen=True)
class TaskReport:
    """A report a task wrote: its output's name, kind (html, markdown, image) and file."""

    output: str
    kind: str
    path: str


@dataclass(frozen=True)
class TaskRow:
    """One step of a run: its status and duration, its metrics, reports and the values it returned."""

    name: str
    status: str  # SUCCESS | FAILURE | RUNNING (had not ended when the run ended) | UNKNOWN (an unfinished run's)
    seconds: float | None  # None while its run has not ended
    metrics: tuple[Metric, ...]
    reports: tuple[TaskReport, ...]
    values: tuple[tuple[str, str], ...]  # the parameters it returned (name, value shortened to VALUE_CHARS)


@dataclass(frozen=True)
class PipelineRunRow:
    """A local pipeline run."""

    pipeline: str
    run: str  # its folder's name, the run's id
    started: datetime | None  # UTC; None when its folder's name does not say
    status: str  # SUCCESS | FAILURE | UNFINISHED
    seconds: float | None  # None while unfinished
    runner: str | None  # subprocess | docker
    tasks: tuple[TaskRow, ...]  # in the order they started
    parameters: tuple[tuple[str, str], ...]
    outputs: tuple[tuple[str, str], ...]  # the pipeline's declared outputs
    log: str | None  # the whole log of the run
    folder: str

    @property
    def failed_tasks(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks if t.status == "FAILURE")


@dataclass(frozen=True)
class PipelinesPage:
    """Local runs, newest first: the newest ``runs_shown`` in full, the rest counted."""

    runs: tuple[PipelineRunRow, ...]
    total: int  # run folders, read or not
    not_read: int
    unreadable: int  # run.json files that could not be read
    kfp_ui: str | None  # where runs on a cluster are


def runs_folder(ws: Workspace) -> Path:
    """Where local runs go (kiln.workflow.local_run.run_local)."""
    return ws.folder("pipelines") / "runs"


def pipelines_page(ws: Workspace, runs_shown: int = RUNS_SHOWN) -> PipelinesPage:
    """The Pipelines page of ``ws``; empty for a workspace that never ran a pipeline.

    Bounded: the newest ``runs_shown`` runs are read (run.json and each task's executor_output.json, the first
    SNIFF_BYTES of each report file); older runs are only counted from the folder listing.
    """
    folders = _run_folders(runs_folder(ws))
    rows: list[PipelineRunRow] = []
    unreadable = 0
    for folder, stamp in folders[:runs_shown]:
        try:
            rows.append(_run_row(folder, stamp))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            unreadable += 1
    return PipelinesPage(tuple(rows), len(folders), max(0, len(folders) - runs_shown), unreadable,
                         ws.settings.studio.kfp_ui)


def _run_folders(root: Path) -> list[tuple[Path, datetime]]:
    """Every run folder with the time its name gives (its modification time when the name gives none), newest first."""
    dated: list[tuple[Path, datetime]] = []
    try:
        with os.scandir(root) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_dir():
                    continue
                when = _name_time(entry.name)
                if when is None:
                    try:
                        when = datetime.fromtimestamp(entry.stat().st_mtime, UTC)
                    except OSError:  # removed since it was listed
                        continue
                dated.append((Path(entry.path), when))
    except OSError:  # no run yet
        return []
    return sorted(dated, key=lambda pair: pair[1], reverse=True)


def _name_time(name: str) -> datetime | None:
    m = RUN_NAME.match(name)
    if m is None:
        return None
    try:
        local = datetime.strptime(m["stamp"] + (m["micro"] or "-000000"), "%Y-%m-%d-%H-%M-%S-%f")
    except ValueError:  # digits in the shape of a time that is none (month 13)
        return None
    return local.astimezone(UTC)  # KFP stamps the folder with this machine's local time


def _run_row(folder: Path, stamp: datetime) -> PipelineRunRow:
    try:
        data = json.loads((folder / RUN_FILE).read_text())  # LocalRun.to_dict; there is no reader of it to reuse
    except FileNotFoundError:
        return _unfinished(folder)
    run = LocalRun(**{**data, "tasks": [TaskRecord(**t) for t in data["tasks"]]})
    named = RUN_NAME.match(folder.name)
    started: datetime | None = None
    if named is not None:  # Kiln's own name for a run without outputs says when it ended
        started = stamp if named["micro"] else stamp - timedelta(seconds=float(run.seconds))
    tasks = tuple(TaskRow(t.name, str(t.status), float(t.seconds), *_outputs(folder / t.name)) for t in run.tasks)
    log = folder / "pipeline.log"
    return PipelineRunRow(
        pipeline=str(run.pipeline), run=folder.name, started=started, status=str(run.status),
        seconds=float(run.seconds), runner=str(run.runner), tasks=tasks, parameters=_pairs(run.parameters),
        outputs=_pairs(run.outputs), log=str(log) if log.is_file() else None, folder=str(folder))


def _unfinished(folder: Path) -> PipelineRunRow:
    """A run without run.json: its tasks are those whose folders are there so far."""
    named = RUN_NAME.match(folder.name)
    tasks = []
    for task in sorted(p for p in folder.iterdir() if p.is_dir()):
        done = (task / EXECUTOR_OUTPUT).is_file()  # KFP writes it when the step has returned
        tasks.append(TaskRow(task.name, "SUCCESS" if done else "UNKNOWN", None, *_outputs(task)))
    return PipelineRunRow(
        pipeline=named["pipeline"] if named else folder.name, run=folder.name,
        started=_name_time(folder.name) if named and named["micro"] else None, status=UNFINISHED, seconds=None,
        runner=None, tasks=tuple(tasks), parameters=(), outputs=(), log=None, folder=str(folder))


def _outputs(task: Path) -> tuple[tuple[Metric, ...], tuple[TaskReport, ...], tuple[tuple[str, str], ...]]:
    """A task's metrics, reports and returned values, from KFP's executor_output.json (read here as JSON: KFP's own
    reader needs KFP and its protobuf classes, seconds to import)."""
    try:
        data = json.loads((task / EXECUTOR_OUTPUT).read_text())
    except (OSError, ValueError):  # a task without outputs has no file; a torn one shows no outputs
        return (), (), ()
    metrics: list[Metric] = []
    reports: list[TaskReport] = []
    try:
        for output, entry in sorted((data.get("artifacts") or {}).items()):
            for artifact in (entry or {}).get("artifacts") or []:
                metadata = artifact.get("metadata") or {}
                if metadata and all(_is_number(v) for v in metadata.values()):  # a Metrics artifact
                    metrics += [Metric(name, float(value)) for name, value in sorted(metadata.items())]
                kind = _report_kind(Path(str(artifact.get("uri", ""))))
                if kind is not None:
                    reports.append(TaskReport(output, kind, str(artifact["uri"])))
        values = _pairs(data.get("parameterValues") or {})
    except (AttributeError, TypeError, KeyError, OSError):  # not KFP's shape: the task is shown without outputs
        return (), (), ()
    return tuple(metrics), tuple(reports), values


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _report_kind(path: Path) -> str | None:
    """html, markdown or image for a report file, by its first bytes (KFP keeps no type beside the artifact); None
    for anything else (datasets, models, folders) and for a step's placeholder that says it had no report."""
    if not path.name or not path.is_file():
        return None
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    text = head.lstrip()
    if text.rstrip() in NO_REPORT:
        return None
    if head.startswith(b"\x89PNG") or path.suffix.lower() in (".png", ".svg", ".jpg", ".jpeg"):
        return "image"
    if text.startswith(b"<"):
        return "html"
    if text.startswith(b"#") or path.suffix.lower() == ".md":
        return "markdown"
    return None


def _pairs(values: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), _short(v)) for k, v in values.items())


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= VALUE_CHARS else text[:VALUE_CHARS - 1] + "…"
