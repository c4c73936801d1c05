"""How the Debugger looks at a learner after a step: one probe per family, each the cheapest way its engine allows.

Rules never see a family's classes: they ask what a probe can show (``shows``) and read its observations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from kiln.data.task import Task
from kiln.training.debugger.observation import Observation, TreeStats
from kiln.training.family import Learner

if TYPE_CHECKING:
    import numpy as np

    from kiln.training.prepare import Prepared

# What a probe may show beyond losses; rules name what they need.
LAYERS, RELU, TREES = "layers", "relu", "trees"
SAMPLE_SEED = 0  # the Debugger's own draws: the learner's random state is left alone
ALL_ROWS_FACTOR = 20


class Probe(Protocol):
    """Measures a learner after a step: training and validation loss, and its internals when ``look`` is set."""

    loss: str  # the loss's name for people: "log-loss" or "RMSE"
    shows: frozenset[str]

    def observe(self, learner: Learner, step: int, look: bool, valid_loss: float | None = None) -> Observation:
        """``valid_loss``: the validation loss when the caller measured it already (on every validation row)."""
        ...


def loss_name(task: Task) -> str:
    """The loss a task is watched on, named for people."""
    return "log-loss" if task.is_classification else "RMSE"


def task_loss(task: Task, y: "np.ndarray", output: "np.ndarray") -> float:
    """Log-loss of class probabilities (clipped as the task metrics clip them) or RMSE of values."""
    import numpy as np

    # sklearn's log_loss checks its inputs at a cost larger than a small training step; these are the same sums
    if task.kind == "regression":
        return float(np.sqrt(np.mean((np.asarray(output, dtype=float) - y) ** 2)))
    p = np.asarray(output, dtype=float)
    if task.kind == "binary":
        p = np.clip(p.reshape(-1), 1e-7, 1 - 1e-7)
        return float(-np.mean(np.where(y == 1, np.log(p), np.log1p(-p))))
    p = np.clip(p, 1e-7, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(len(y)), y.astype(int)])))


def sample_rows(n: int, most: int) -> "np.ndarray":
    """Sorted indexes of at most ``most`` of ``n`` rows, the same on every call."""
    import numpy as np

    if n <= most:
        return np.arange(n)
    return np.sort(np.random.default_rng(SAMPLE_SEED).choice(n, size=most, replace=False))


def scored_rows(n: int, most: int) -> "np.ndarray | None":
    """The training rows a tree model's loss is measured on: all of them (None) up to ``ALL_ROWS_FACTOR`` times
    ``most``, else a fixed sample of ``most``. The engines score the rows they keep running scores of in about 30
    ns a row; a sample costs them a run of each new tree over it, ten trees a step at 20-40 ns each."""
    return None if n <= ALL_ROWS_FACTOR * most else sample_rows(n, most)


class OutputProbe:
    """Losses of the learner's outputs on a sample of training rows and on the validation rows; no internals."""

    shows: frozenset[str] = frozenset()

    def __init__(self, prep: "Prepared", rows: int) -> None:
        self.task, self.loss = prep.task, loss_name(prep.task)
        train, valid = sample_rows(len(prep.y["train"]), rows), sample_rows(len(prep.y["valid"]), rows)
        self.x_train, self.y_train = prep.x["train"][train], prep.y["train"][train]
        self.x_valid, self.y_valid = prep.x["valid"][valid], prep.y["valid"][valid]

    def observe(self, learner: Learner, step: int, look: bool, valid_loss: float | None = None) -> Observation:
        if valid_loss is None:
            valid_loss = task_loss(self.task, self.y_valid, learner.output(self.x_valid))
        return Observation(step=step, train_loss=task_loss(self.task, self.y_train, learner.output(self.x_train)),
                           valid_loss=valid_loss)


def gain_shares(names: list[str], gains: dict[int, float]) -> dict[str, float]:
    """Each feature's share of the total gain, largest first; empty when no split was made."""
    total = sum(gains.values())
    if total <= 0:
        return {}
    ranked = sorted(((names[i] if i < len(names) else f"f{i}", g / total) for i, g in gains.items() if g > 0),
                    key=lambda item: -item[1])
    return dict(ranked)


def tree_stats(inspected: int, at_cap: int, cap: str, names: list[str], gains: dict[int, float]) -> TreeStats:
    """A look at a tree model: the trees at their cap so far, and the gain by feature (by encoded column index)."""
    return TreeStats(inspected=inspected, at_cap=at_cap, cap=cap, gain=gain_shares(names, gains))
