"""Run a pipeline on this machine with kfp.local: every task a process of this environment (SubprocessRunner, each
step a fork of a warm step server) or a container of the platform image (DockerRunner, `kiln.workflow.docker_steps`)."""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import re
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from kiln.errors import InputError, PipelineFailed
from kiln.progress import Progress, no_progress
from kiln.workflow.docker_steps import containers_of, step_containers
from kiln.workflow.result import FAILED_MARK, MARK
from kiln.workflow.step_server import warm_steps
from kiln.workspace import (  # pipelines' defaults name it; locally it is -w
    CLUSTER_WORKSPACE,
    Workspace,
)

ANSI = re.compile(r"\x1b\[[0-9;]*m")
STARTED = re.compile(r"Executing task '([^']+)'")
FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
INNER = re.compile(r"Inner task failed: '([^']+)'")
ERROR = re.compile(r"^\s*(kiln\.errors\.\w+|\w+Error): (.+)$")
LOG_RECORD = re.compile(r"^\d\d:\d\d:\d\d\.\d+ - ")


@dataclass
class TaskRecord:
    name: str
    status: str = "RUNNING"
    seconds: float = 0.0
    started: float = 0.0


@dataclass
class LocalRun:
    pipeline: str
    run: str
    runner: str
    status: str
    seconds: float
    root: str
    log: str
    parameters: dict[str, Any]
    tasks: list[TaskRecord] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for task in data["tasks"]:
            del task["started"]
        return data


class _Watcher:
    """Every line of the run into the log file; task starts and ends and the components' progress lines picked out."""

    def __init__(self, log: TextIO, progress: Progress) -> None:
        self.log, self.stdout, self.print, self._progress = log, sys.stdout, builtins.print, progress
        self.lock = threading.RLock()
        self.records: list[TaskRecord] = []
        self.open: dict[str, list[TaskRecord]] = {}
        self.errors: dict[str, str] = {}  # task -> the last exception line of its output
        self.failures: dict[str, dict[str, Any]] = {}  # task -> the Kiln error its step announced
        self.current: str | None = None
        self.error_task: str | None = None  # a task whose error message is being read, line by line
        self.pending = ""

    def write(self, text: str) -> int:
        with self.lock:  # loop iterations run in threads that all write here
            self.log.write(text)
            self.pending += text
            *lines, self.pending = self.pending.split("\n")
            for line in lines:
                self._line(ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self.log.flush()

    def progress(self, message: str) -> None:
        """The caller's progress, with the terminal and print as they were (kfp indents print while a task runs)."""

        indented, builtins.print = builtins.print, self.print
        try:
            with contextlib.redirect_stdout(self.stdout):
                self._progress(message)
        finally:
            builtins.print = indented

    def _line(self, line: str) -> None:
        if self.error_task is not None:
            if line.strip() and not LOG_RECORD.match(line):
                self.errors[self.error_task] += "\n  " + line.strip()
                return
            self.error_task = None
        if m := STARTED.search(line):
            name = m.group(1)
            seen = sum(1 for t in self.records if t.name.split(" #")[0] == name)
            task = TaskRecord(name if not seen else f"{name} #{seen + 1}", started=time.perf_counter())
            self.records.append(task)
            self.open.setdefault(name, []).append(task)  # loop iterations run at once under one name
            self.current = task.name
            self.progress(f"{task.name}: started")
        elif m := FINISHED.search(line):
            name = m.group(1)
            task = (self.open.get(name) or [TaskRecord(name, started=time.perf_counter())]).pop(0)
            if task not in self.records:
                self.records.append(task)
            task.status, task.seconds = m.group(2), round(time.perf_counter() - task.started, 1)
            self.progress(f"{task.name}: {task.status.lower()} in {task.seconds:.1f} s")
        elif FAILED_MARK in line:
            with contextlib.suppress(ValueError):
                self.failures[(self.current or "-").split(" #")[0]] = json.loads(line.split(FAILED_MARK, 1)[1])
        elif MARK in line:
            self.progress(f"{self.current or '-'}: {line.split(MARK, 1)[1]}")
        elif self.current and (m := ERROR.match(line)):
            self.error_task = self.current.split(" #")[0]
            self.errors[self.error_task] = f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2)}"

    def failed(self, message: str) -> str:
        """The failed task: named by the finishing line, else by the runner's exception ``message``."""
        done = [t.name.split(" #")[0] for t in self.records if t.status == "FAILURE"]
        if done:
            return done[-1]
        m = FINISHED.search(message) or INNER.search(message)
        name = m.group(1) if m else "?"
        for task in self.open.get(name, []):
            task.status, task.seconds = "FAILURE", round(time.perf_counter() - task.started, 1)
        return name


def coerce_parameters(pipeline: Any, given: dict[str, str]) -> dict[str, Any]:
    """``--param K=V`` values as the pipeline's declared types; an unknown name or a wrong value names the param."""
    inputs = pipeline.component_spec.inputs or {}
    out: dict[str, Any] = {}
    for name, text in given.items():
        if name not in inputs:
            raise InputError(f"--param {name}: pipeline {pipeline.name} has no such parameter; it has "
                             f"{', '.join(inputs)}")
        kind = inputs[name].type
        try:
            if kind == "Integer":
                out[name] = int(text)
            elif kind == "Float":
                out[name] = float(text)
            elif kind == "Boolean":
                if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(text)
                out[name] = text.lower() in ("true", "1", "yes")
            elif kind == "List":
                out[name] = json.loads(text) if text.strip().startswith("[") else [t.strip() for t in text.split(",")
                                                                                    if t.strip()]
            else:
                out[name] = text
        except ValueError:
            raise InputError(f"--param {name}={text}: expected {kind.lower()}") from None
    return out


def local_parameters(pipeline: Any, ws: Workspace, given: dict[str, Any]) -> dict[str, Any]:
    """The run's parameters: the given ones, then defaults under the cluster workspace moved to this workspace."""
    params = dict(given)
    for name, spec in (pipeline.component_spec.inputs or {}).items():
        default = spec.default
        if name not in params and isinstance(default, str) and default.startswith(CLUSTER_WORKSPACE):
            params[name] = str(ws.root) + default[len(CLUSTER_WORKSPACE):]
    return params


@contextlib.contextmanager
def _one_log_handler(stream: _Watcher) -> Iterator[None]:
    """One handler on the root logger for the whole run, in place of kfp's per-task swap of handlers, which loses
    records when loop iterations run at once (one thread clears the handlers while another logs)."""

    from kfp.local import logging_utils

    root = logging.getLogger()
    saved = (root.level, root.handlers[:], logging_utils.local_logger_context)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging_utils.MillisecondFormatter(fmt="%(asctime)s - %(levelname)s - %(message)s",
                                                             datefmt="%H:%M:%S.%f"))
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging_utils.local_logger_context = contextlib.nullcontext
    try:
        yield
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        logging_utils.local_logger_context = saved[2]


def _keep_outer_outputs_in_loops() -> None:
    """kfp 2.17.0's local runner hands a ParallelFor's loop item to every input that comes from an earlier task's
    output (not only to the loop's items); this puts those inputs back, so a loop body sees the real values."""
    from kfp.local.orchestrator import task_spec_utils

    original = task_spec_utils.create_parameter_loop_iteration_task_spec
    if getattr(original, "kiln_fixed", False):
        return

    def fixed(original_task_spec: Any, loop_item: Any, loop_task_name: str) -> Any:
        items = original_task_spec.parameter_iterator.items.input_parameter
        outer = {name: spec for name, spec in original_task_spec.inputs.parameters.items()
                 if spec.HasField("task_output_parameter") and name != items}
        iteration = original(original_task_spec, loop_item, loop_task_name)
        for name, spec in outer.items():
            iteration.inputs.parameters[name].CopyFrom(spec)
        return iteration

    fixed.kiln_fixed = True  # type: ignore[attr-defined]  # a marker on the function object, checked before patching again
    task_spec_utils.create_parameter_loop_iteration_task_spec = fixed


RUNNERS = ("subprocess", "docker")


def run_local(ws: Workspace, pipeline: Any, params: dict[str, Any],
              progress: Progress = no_progress, runner: str = "subprocess") -> LocalRun:
    """Run ``pipeline`` here, each step a process (``runner`` subprocess) or a container of the platform image
    (docker); outputs under WS/pipelines/runs/RUN, the whole log beside them."""

    from kfp import local

    if runner not in RUNNERS:
        raise InputError(f"--runner {runner}: expected one of {', '.join(RUNNERS)}")
    steps = step_containers(ws) if runner == "docker" else None  # the engine and image checked before anything runs
    root = ws.folder("pipelines") / "runs"
    root.mkdir(parents=True, exist_ok=True)
    params = local_parameters(pipeline, ws, params)
    before = set(root.iterdir())
    log_path = root / f".{pipeline.name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    _keep_outer_outputs_in_loops()
    kfp_runner = (local.DockerRunner(**steps.run_args) if steps else local.SubprocessRunner(use_venv=False))
    local.init(runner=kfp_runner, pipeline_root=str(root), raise_on_error=True)
    started = time.perf_counter()
    failure: str | None = None
    outputs: Any = None
    with open(log_path, "w") as log, (containers_of(steps) if steps else warm_steps()):
        watcher = _Watcher(log, progress)
        with (contextlib.redirect_stdout(watcher),
              _one_log_handler(watcher),
              warnings.catch_warnings()):
            # the subprocess runner warns about any image not named "python"; the platform image is not
            warnings.filterwarnings("ignore", message=".*non-Python base image.*")
            real_print = builtins.print
            try:
                outputs = pipeline(**params)
            except RuntimeError as exc:
                failure = ANSI.sub("", str(exc))
            finally:
                # kfp indents print while a task runs; loop iterations at once can leave it indented for good
                builtins.print = real_print
    failed_task = watcher.failed(failure) if failure else None
    made = sorted(set(root.iterdir()) - before - {log_path}, key=lambda p: p.stat().st_mtime)
    # a run that failed before writing any output has no folder of its own yet
    folder = made[-1] if made else root / f"{pipeline.name}-{time.strftime('%Y-%m-%d-%H-%M-%S')}"
    folder.mkdir(exist_ok=True)
    final_log = folder / "pipeline.log"
    log_path.replace(final_log)
    run = LocalRun(pipeline=pipeline.name, run=folder.name, runner=runner, status="FAILURE" if failure else "SUCCESS",
                   seconds=round(time.perf_counter() - started, 1), root=str(folder), log=str(final_log),
                   parameters=params, tasks=watcher.records, outputs=_plain(outputs))
    (folder / "run.json").write_text(json.dumps(run.to_dict(), indent=2, default=str) + "\n")
    if failed_task is not None:
        announced = watcher.failures.get(failed_task)
        cause = (f"{announced['error']}: {announced['message']}" if announced
                 else watcher.errors.get(failed_task, "see the log"))
        raise PipelineFailed(f"pipeline {pipeline.name}, run {run.run}: task {failed_task} failed: {cause}",
                             hint=f"the whole log: {final_log}",
                             exit_code=int(announced["exit_code"]) if announced else PipelineFailed.exit_code)
    return run


def _plain(outputs: Any) -> dict[str, Any]:
    if not isinstance(outputs, dict):
        return {}  # a pipeline without declared outputs hands back its last task
    return {k: v if isinstance(v, (str, int, float, bool, list, dict)) else str(v) for k, v in outputs.items()}
