"""The function every tuning trial runs inside Ray: learn step by step, report, checkpoint."""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any

from kiln.training.entry import ControlFlow, context_for, load_entry_point, task_output
from kiln.training.families import get_family
from kiln.training.metrics import objective, task_metrics
from kiln.training.prepare import Prepared, start, validation_metrics

METRIC = "valid_score"  # the task's objective metric (AUC, log-loss, RMSE) on the validation rows


def run_trial(config: dict[str, Any], family_name: str, prep: Prepared, seed: int, max_iterations: int) -> None:
    """One trial; a paused or interrupted trial continues from its newest checkpoint."""
    from ray import tune

    family = get_family(family_name)
    learner = start(family, config, prep, seed)
    goal = objective(prep.task)
    done = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            done = json.loads((Path(folder) / "progress.json").read_text())["iteration"]
            learner.restore((Path(folder) / "learner.bin").read_bytes())
    for i in range(done + 1, max_iterations + 1):
        learner.step()
        valid = validation_metrics(learner, prep)
        with tempfile.TemporaryDirectory(prefix="kiln-trial-") as tmp:
            (Path(tmp) / "progress.json").write_text(json.dumps({"iteration": i}))
            (Path(tmp) / "learner.bin").write_bytes(learner.state())
            score = valid[goal.metric]
            score = goal.missing() if score is None else score
            tune.report({METRIC: score, f"valid_{goal.metric}": score, "iteration": i},
                        checkpoint=tune.Checkpoint.from_directory(tmp))


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
