"""The function every tuning trial runs inside Ray: learn step by step, report, checkpoint."""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any

from kiln.settings import DebuggerSettings
from kiln.training.debugger import Debugger
from kiln.training.entry import ControlFlow, context_for, load_entry_point, task_output
from kiln.training.families import get_family
from kiln.training.metrics import objective, task_metrics
from kiln.training.prepare import Prepared, start, validation_metrics

METRIC = "valid_score"  # the task's objective metric (AUC, log-loss, RMSE) on the validation rows


def run_trial(config: dict[str, Any], family_name: str, prep: Prepared, seed: int, max_iterations: int,
              debugger: DebuggerSettings | None = None) -> None:
    """One trial; a paused or interrupted trial continues from its newest checkpoint.

    With ``debugger`` settings (enabled), the Debugger's rules are evaluated after every step: their findings are
    reported with the trial's metrics, and a rule whose action is stop ends the trial after that report.
    """
    from ray import tune

    family = get_family(family_name)
    learner = start(family, config, prep, seed)
    goal = objective(prep.task)
    session = Debugger(debugger, profile=debugger.profile_trials) if debugger and debugger.enabled else None
    done = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            progress = json.loads((Path(folder) / "progress.json").read_text())
            done = progress["iteration"]
            learner.restore((Path(folder) / "learner.bin").read_bytes())
            if session is not None and progress.get("debugger"):
                session.restore(progress["debugger"])
    if session is not None:
        session.begin(family.name, learner, prep)
    for i in range(done + 1, max_iterations + 1):
        learner.step()
        valid = validation_metrics(learner, prep)
        stop = session is not None and session.after_step(i, learner, last=i == max_iterations, valid=valid)
        if session is not None and (stop or i == max_iterations):
            session.end(learner)
        with tempfile.TemporaryDirectory(prefix="kiln-trial-") as tmp:
            (Path(tmp) / "progress.json").write_text(json.dumps(
                {"iteration": i, "debugger": session.state() if session is not None else None}))
            (Path(tmp) / "learner.bin").write_bytes(learner.state())
            score = valid[goal.metric]
            score = goal.missing() if score is None else score
            tune.report({METRIC: score, f"valid_{goal.metric}": score, "iteration": i,
                         **(debugger_metrics(session) if session is not None else {})},
                        checkpoint=tune.Checkpoint.from_directory(tmp))
        if stop:
            return


def debugger_metrics(session: Debugger) -> dict[str, Any]:
    """What a trial reports of its Debugger: the findings' count, the rule that stopped it (its name and message;
    empty while none did) and, when it is profiled, its peak memory and mean CPU."""
    out: dict[str, Any] = {"debugger_findings": len(session.findings),
                           "debugger_stopped": session.stopped.rule if session.stopped else "",
                           "debugger_stop_message": session.stopped.message if session.stopped else ""}
    if session.profiler is not None:
        profile = session.profile or session.profiler.summary()
        out |= {"debugger_rss_peak_mb": profile.rss_peak_mb, "debugger_cpu_mean": profile.cpu_mean}
    return out


class _Enough(ControlFlow):
    """The trial made its last report: the user's train() is stopped there."""


def run_entry_trial(config: dict[str, Any], entry_path: str, prep: Prepared, seed: int, max_iterations: int) -> None:
    """One trial of the user's own code: each report() it makes is scored and reported to Ray, up to
    ``max_iterations`` of them (no checkpoints: an interrupted trial starts again)."""
    from ray import tune

    entry = load_entry_point(Path(entry_path))
    goal = objective(prep.task)

    def on_report(iteration: int, model: Any) -> None:
        output = task_output(entry, prep.task, entry.predict(model, prep.x["valid"]), len(prep.x["valid"]))
        score = task_metrics(prep.task, prep.y["valid"], output)[goal.metric]
        score = goal.missing() if score is None else score
        tune.report({METRIC: score, f"valid_{goal.metric}": score, "iteration": iteration})
        if iteration >= max_iterations:
            raise _Enough

    with contextlib.suppress(_Enough):
        entry.train(context_for(prep, entry, config, seed, on_report))
