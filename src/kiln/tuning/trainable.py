"""The function every tuning trial runs inside Ray: learn step by step, report, checkpoint."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from kiln.training.families import get_family
from kiln.training.metrics import classification_metrics
from kiln.training.prepare import Prepared

METRIC = "valid_auc"


def run_trial(config: dict[str, Any], family_name: str, prep: Prepared, seed: int, max_iterations: int) -> None:
    """One trial; a paused or interrupted trial continues from its newest checkpoint."""
    from ray import tune

    family = get_family(family_name)
    learner = family.start(config, prep.x["train"], prep.y["train"], seed)
    done = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            done = json.loads((Path(folder) / "progress.json").read_text())["iteration"]
            learner.restore((Path(folder) / "learner.bin").read_bytes())
    for i in range(done + 1, max_iterations + 1):
        learner.step()
        valid = classification_metrics(prep.y["valid"], learner.predict_proba(prep.x["valid"]))
        with tempfile.TemporaryDirectory(prefix="kiln-trial-") as tmp:
            (Path(tmp) / "progress.json").write_text(json.dumps({"iteration": i}))
            (Path(tmp) / "learner.bin").write_bytes(learner.state())
            tune.report({METRIC: valid["auc"] or 0.0, "valid_log_loss": valid["log_loss"], "iteration": i},
                        checkpoint=tune.Checkpoint.from_directory(tmp))
