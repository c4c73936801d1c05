"""Split a training set and encode it once, for a training run or for every trial of a tuning job."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kiln.data.task import Task
from kiln.training.data import TrainingData
from kiln.training.debugger.session import Debugger
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
        on_iteration: Callable[[int, Metrics], bool | None] | None = None,
        debugger: Debugger | bool = False) -> Learner:
    """Train for up to ``iterations``; after each, ``on_iteration(i, validation metrics)`` may return True to stop.

    ``debugger``: False (the default) evaluates no rule; True evaluates the default rules whose action is stop after
    every step (one that fires ends the training there; alerts would go unread); a Debugger of your own is begun and ended here,
    and read afterwards for its findings and profile.
    """
    session = debugger if isinstance(debugger, Debugger) else \
        Debugger(profile=False, alerts=False) if debugger else None
    learner = start(family, config, prep, seed)
    if session is not None:
        session.begin(family.name, learner, prep)
    try:
        for i in range(1, iterations + 1):
            learner.step()
            valid = validation_metrics(learner, prep) if on_iteration is not None else None
            stop = on_iteration is not None and valid is not None and bool(on_iteration(i, valid))
            if session is not None and session.after_step(i, learner, last=i == iterations, valid=valid):
                stop = True
            if stop:
                break
    finally:
        if session is not None:
            session.end(learner)
    return learner


def start(family: Family, config: dict[str, Any], prep: Prepared, seed: int) -> Learner:
    return family.start(config, prep.x["train"], prep.y["train"], seed, prep.task)


def validation_metrics(learner: Learner, prep: Prepared) -> Metrics:
    return task_metrics(prep.task, prep.y["valid"], learner.output(prep.x["valid"]))
