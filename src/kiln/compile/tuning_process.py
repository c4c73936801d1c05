"""MetaSchedule tuning of a model's kernels, in a fresh process of its own.

Making MetaSchedule's tuning contexts imports TVM's tensor intrinsics, whose parser walks `inspect.stack()` for each
of some 500 kernels, and each walk scans every loaded module: in a process that already holds MLflow, ONNX Runtime
and the CLI that costs about a minute more than in a fresh one.
"""

from __future__ import annotations

import contextlib
import inspect
import multiprocessing
import os
import pickle
import sys
import types
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.compile.build import import_graph
from kiln.compile.targets import CompileTarget
from kiln.compile.tuning import TuningReport, lower, tune, tuning_target
from kiln.errors import KilnError, ServiceError
from kiln.progress import Progress

if TYPE_CHECKING:
    import onnx


def tune_model(graph: "onnx.ModelProto", width: int, batches: tuple[int, ...], target: CompileTarget,
               work_dir: Path, trials: int, again: bool, progress: Progress) -> TuningReport:
    """The kernels of the graph at every batch size, tuned in one budget of ``trials`` (see `tune`), in the process
    `tune_apart` starts: its console goes to the tuning folder once the graph has imported."""
    tvm_target = tuning_target(target)
    modules = [lower(import_graph(graph, batch, width), tvm_target) for batch in batches]
    _console_to(work_dir / "logs" / "console.log")  # a graph that does not import leaves no folder behind
    return tune(modules, tvm_target, work_dir, trials, progress, again)


def tune_apart(graph: "onnx.ModelProto", width: int, batches: tuple[int, ...], target: CompileTarget,
               work_dir: Path, trials: int, again: bool, progress: Progress) -> TuningReport:
    """`tune_model` in a spawned process (it inherits nothing of this one); its progress is shown here."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, name="kiln-tuning", args=(
        sender, graph.SerializeToString(), width, batches, target, str(work_dir), trials, again))
    child.start()
    sender.close()
    try:
        while True:
            try:
                kind, value = receiver.recv()
            except EOFError:
                child.join()
                raise ServiceError(f"the tuning process ended without a result (exit code {child.exitcode})",
                                   hint=f"MetaSchedule's logs: {work_dir / 'logs'}") from None
            if kind == "progress":
                progress(value)
            elif kind == "error":
                raise value
            else:
                report: TuningReport = value
                return report
    finally:
        receiver.close()
        child.join(timeout=30)
        if child.is_alive():  # interrupted: the child had the same Ctrl-C, and is given the time to stop
            child.terminate()
            child.join()


def _child(sender: Connection, graph: bytes, width: int, batches: tuple[int, ...], target: CompileTarget,
           work_dir: str, trials: int, again: bool) -> None:
    import onnx

    try:
        with _getmodule_by_file():
            import tvm.s_tir.tensor_intrin  # noqa: F401 - the tuning contexts import it; done here, at a fraction of the cost
        report = tune_model(onnx.load_from_string(graph), width, batches, target, Path(work_dir), trials, again,
                            lambda message: sender.send(("progress", message)))
        sender.send(("done", report))
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the parent, which raises it
        sender.send(("error", _portable(exc)))
    finally:
        sender.close()


def _console_to(path: Path) -> None:
    """This process's stdout and stderr (MetaSchedule logs each task to the console) into ``path``: the command's
    stdout holds its result alone (`kiln compile --json`), and its progress comes through the pipe."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as log:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)


@contextlib.contextmanager
def _getmodule_by_file() -> Iterator[None]:
    """`inspect.getmodule` of a frame remembered per source file. TVMScript's parser calls `inspect.stack()` for each
    of TVM's ~500 tensor intrinsics, and each frame's lookup scans all of `sys.modules` again (27 s here, 5 s with
    this)."""
    original = inspect.getmodule
    found: dict[str, types.ModuleType | None] = {}

    def getmodule(object: object, _filename: str | None = None) -> types.ModuleType | None:  # inspect.getmodule's own signature
        if _filename is None or not isinstance(object, (types.FrameType, types.CodeType, types.TracebackType)):
            return original(object, _filename)
        if _filename not in found:
            found[_filename] = original(object, _filename)
        return found[_filename]

    inspect.getmodule = getmodule
    try:
        yield
    finally:
        inspect.getmodule = original


def _portable(exc: Exception) -> Any:
    """The error itself when it survives the trip back (Kiln's do), else a ServiceError with its message."""
    if isinstance(exc, KilnError):
        try:
            pickle.loads(pickle.dumps(exc))
            return exc
        except Exception:  # noqa: BLE001 - an error that does not pickle is described instead
            pass
    return ServiceError(f"tuning failed: {type(exc).__name__}: {exc}")
