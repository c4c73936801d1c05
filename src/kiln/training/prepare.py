"""Split a training set and encode it once, for a training run or for every trial of a tuning job."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kiln.data.task import Task
from kiln.training.data import TrainingData
from kiln.training.encoding import Encoder
from kiln.training.family import Family, Learner
from kiln.training.metrics import Metrics, task_metrics
from kiln.training.split import Split, split

if TYPE_CHECKING:
    import numpy as np


@dataclass
class Prepared:
    split: Split
    encoder: Encoder
    x: dict[str, "np.ndarray"]  # "train", "valid", "test"
    y: dict[str, "np.ndarray"]  # class indexes, or numbers for regression
    task: Task

    def summary(self) -> dict[str, Any]:
        return {"method": self.split.method, **self.split.sizes()}


def prepare(data: TrainingData, seed: int) -> Prepared:
    parts = split(data, seed)
    encoder = Encoder.fit(parts.train, data.features, data.categorical)
    frames = {"train": parts.train, "valid": parts.valid, "test": parts.test}
    return Prepared(
        split=parts, encoder=encoder,
        x={k: encoder.transform(f) for k, f in frames.items()},
        y={k: data.labels(f) for k, f in frames.items()},
        task=data.task,
    )


def fit(family: Family, config: dict[str, Any], prep: Prepared, seed: int, iterations: int,
        on_iteration: Callable[[int, Metrics], bool | None] | None = None) -> Learner:
    """Train for up to ``iterations``; after each, ``on_iteration(i, validation metrics)`` may return True to stop."""
    learner = start(family, config, prep, seed)
    for i in range(1, iterations + 1):
        learner.step()
        if on_iteration is not None and on_iteration(i, validation_metrics(learner, prep)):
            break
    return learner


def start(family: Family, config: dict[str, Any], prep: Prepared, seed: int) -> Learner:
    return family.start(config, prep.x["train"], prep.y["train"], seed, prep.task)


def validation_metrics(learner: Learner, prep: Prepared) -> Metrics:
    return task_metrics(prep.task, prep.y["valid"], learner.output(prep.x["valid"]))
