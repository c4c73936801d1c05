"""The function every tuning trial runs inside Ray: learn step by step, report, checkpoint."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from kiln.training.families import get_family
from kiln.training.metrics import objective
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
