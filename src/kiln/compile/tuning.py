"""MetaSchedule tuning on this machine, with the records kept per target and CPU and reused.

MetaSchedule keys its records by each kernel's structure (shapes and operations, not weights), so a
recompile of the same shapes, or another model with the same layer sizes, finds them and tunes nothing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.compile.targets import CompileTarget, host_cpu
from kiln.errors import InputError
from kiln.locking import exclusive
from kiln.progress import Progress
from kiln.workspace import Workspace

if TYPE_CHECKING:
    import tvm

DEFAULT_TRIALS = 600  # about 60 per kernel of an MLP at both batch sizes: some 5 minutes on 2 cores
TRIALS_PER_ITERATION = 64  # at most this many candidates measured per kernel and round


@dataclass
class TuningReport:
    database: str
    tasks: int
    tuned: list[str]  # kernels tuned in this compile
    reused: list[str]  # kernels whose records were already in the database
    untuned: list[str]  # kernels the budget did not reach: they keep TVM's default schedule
    trials: int
    seconds: float


def tuning_dir(ws: Workspace, target: CompileTarget) -> Path:
    """One MetaSchedule database per target and CPU: records measured on one CPU say nothing about another."""
    return ws.root / "artifacts" / "tuning" / f"{target.name}-{target.cpu}"


def check_tunable(target: CompileTarget, trials: int) -> None:
    """Tuning measures candidate kernels, so it runs only for the CPU of this machine."""
    if trials < 1:
        raise InputError(f"--trials {trials}: give at least 1 (MetaSchedule measures that many candidates)")
    if not target.runs_here or target.name == "cuda":
        where = "there is no GPU here" if target.name == "cuda" else f"this machine is not {target.machine}"
        raise InputError(f"--tune measures candidate kernels on the target, and {where}",
                         hint=f"compile for {target.name} without --tune, or tune on such a machine")
    if target.cpu != host_cpu():
        raise InputError(f"--tune with --cpu {target.cpu}: tuning measures on this machine's CPU ({host_cpu()})",
                         hint="drop --cpu to tune for this machine, or drop --tune")


def tuning_target(target: CompileTarget) -> "tvm.target.Target":
    """The target with this machine's core count, which MetaSchedule's CPU rules require."""

    import tvm

    return tvm.target.Target({**target.tvm_target().export(), "num-cores": os.cpu_count() or 1})


def lower(mod: "tvm.IRModule", tvm_target: Any) -> "tvm.IRModule":
    """The Relax module legalized and fused into the kernels MetaSchedule schedules (its tuning pipeline's start)."""
    import tvm
    from tvm import relax
    from tvm.relax import transform

    with tvm_target:
        return tvm.transform.Sequential([transform.DecomposeOpsForInference(), transform.CanonicalizeBindings(),
                                         relax.get_pipeline("zero")])(mod)


def tune(modules: list["tvm.IRModule"], tvm_target: Any, work_dir: Path, trials: int,
         progress: Progress, again: bool = False) -> TuningReport:
    """Tune the kernels of the lowered ``modules`` that the database has no record for, in one budget of
    ``trials``, and leave the records in the database. ``again``: tune every kernel, recorded or not (the
    database keeps the best of old and new records)."""
    from tvm.s_tir import meta_schedule as ms

    started = time.monotonic()
    work_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(work_dir / ".lock"):  # one tuner per database: two writers would interleave records
        tasks = [t for mod in modules for t in ms.relax_integration.extract_tasks(mod, tvm_target)]
        database = ms.database.JSONDatabase(work_dir=str(work_dir))
        missing = tasks if again else [t for t in tasks if not _has_record(database, t)]
        reused = [t.task_name for t in tasks if t not in missing]
        if missing:
            progress(f"tuning {len(missing)} kernel(s) with MetaSchedule, {trials} trials "
                     f"({len(reused)} found in {work_dir})")
            contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                extracted_tasks=missing, work_dir=str(work_dir), seed=0)
            ms.tune.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(work_dir),
                               max_trials_global=trials, database=database, builder=_in_process_builder(),
                               # MetaSchedule visits the kernels in turn: a round each, so the budget reaches all
                               num_trials_per_iter=max(1, min(TRIALS_PER_ITERATION, trials // len(missing))))
        else:
            progress(f"every kernel's schedule found in {work_dir}: nothing to tune")
        done = [t for t in missing if _has_record(database, t)]
    return TuningReport(database=str(work_dir), tasks=len(tasks), tuned=[t.task_name for t in done],
                        reused=reused, untuned=[t.task_name for t in missing if t not in done],
                        trials=trials if missing else 0, seconds=round(time.monotonic() - started, 1))


def apply(lowered: "tvm.IRModule", tvm_target: Any, work_dir: Path) -> "tvm.IRModule":
    """Each kernel with its best recorded schedule (kernels without a record keep TVM's default)."""
    from tvm.relax import transform

    with tvm_target:
        return transform.MetaScheduleApplyDatabase(str(work_dir))(lowered)


def _in_process_builder() -> Any:
    """Candidates built in this process. MetaSchedule's LocalBuilder starts fresh worker processes for every
    round, and each spends about 20 s importing TVM's tensor intrinsics before it builds a kernel in 0.1 s."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export

    @derived_object
    class InProcessBuilder(PyBuilder):
        def build(self, build_inputs: list[Any]) -> list[Any]:  # BuilderInput in, BuilderResult out
            results = []
            for item in build_inputs:
                try:
                    results.append(BuilderResult(default_export(default_build(item.mod, item.target, None)), None))
                except Exception as exc:  # noqa: BLE001 - a candidate that does not build is a failed trial
                    results.append(BuilderResult(None, f"build failed: {exc}"))
            return results

    return InProcessBuilder()


def _has_record(database: Any, task: Any) -> bool:
    mod = task.dispatched[0]
    if not database.has_workload(mod):
        return False
    workload = database.commit_workload(mod)
    return bool(database.get_top_k(workload, 1))
