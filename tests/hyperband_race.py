"""Runs Kiln's Hyperband scheduler where Ray's own loses a trial: both trials of a bracket report its last
milestone at the same moment, so one is paused (saving) while the other settles the bracket.

Usage: python tests/hyperband_race.py FOLDER; prints one JSON line. The race shows most often in a fresh
Ray instance, so each round is a process of its own.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import ray
from ray import tune

from kiln.tuning.hyperband import SettlingHyperBand

MAX_T = 3


def trial(config: dict) -> None:
    barrier = Path(config["barrier"])
    for i in range(1, MAX_T + 1):
        if i == MAX_T:
            (barrier / tune.get_context().get_trial_id()).touch()
            while len(list(barrier.iterdir())) < 2:
                time.sleep(0.01)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "step").write_text(str(i))
            tune.report({"score": config["x"] + i}, checkpoint=tune.Checkpoint.from_directory(tmp))


def main(root: Path) -> None:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    barrier = root / "barrier"
    barrier.mkdir(parents=True)
    tuner = tune.Tuner(
        tune.with_resources(trial, {"cpu": 1}),
        param_space={"x": tune.uniform(0, 1), "barrier": str(barrier)},
        tune_config=tune.TuneConfig(metric="score", mode="max", num_samples=2, max_concurrent_trials=2,
                                    scheduler=SettlingHyperBand(max_t=MAX_T, reduction_factor=3), reuse_actors=False),
        run_config=tune.RunConfig(storage_path=str(root / "runs"), name="race", verbose=0),
    )
    grid = tuner.fit()
    print(json.dumps({"terminated": grid.num_terminated, "errors": grid.num_errors,
                      "iterations": sorted(r.metrics.get("training_iteration") for r in grid)}), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
