"""Split a training set and encode it once, for a training run or for every trial of a tuning job."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kiln.training.data import TrainingData
from kiln.training.encoding import Encoder
from kiln.training.families import Family, Learner
from kiln.training.metrics import classification_metrics
from kiln.training.split import Split, split

if TYPE_CHECKING:
    import numpy as np


@dataclass
class Prepared:
    split: Split
    encoder: Encoder
    x: dict[str, "np.ndarray"]  # "train", "valid", "test"
    y: dict[str, "np.ndarray"]

    def summary(self) -> dict[str, Any]:
        return {"method": self.split.method, **self.split.sizes()}


def prepare(data: TrainingData, seed: int) -> Prepared:
    parts = split(data, seed)
    encoder = Encoder.fit(parts.train, data.features, data.categorical)
    frames = {"train": parts.train, "valid": parts.valid, "test": parts.test}
    return Prepared(
        split=parts, encoder=encoder,
        x={k: encoder.transform(f) for k, f in frames.items()},
        y={k: f[data.label].to_numpy(dtype="int64") for k, f in frames.items()},
    )


def fit(family: Family, config: dict[str, Any], prep: Prepared, seed: int, iterations: int,
        on_iteration: Callable[[int, dict[str, float | None]], bool | None] | None = None) -> Learner:
    """Train for up to ``iterations``; after each, ``on_iteration(i, validation metrics)`` may return True to stop."""
    learner = family.start(config, prep.x["train"], prep.y["train"], seed)
    for i in range(1, iterations + 1):
        learner.step()
        if on_iteration is not None:
            valid = classification_metrics(prep.y["valid"], learner.predict_proba(prep.x["valid"]))
            if on_iteration(i, valid):
                break
    return learner
