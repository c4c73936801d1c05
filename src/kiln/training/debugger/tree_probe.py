"""Probes of the boosted-tree families: losses from running scores, shape from the newest trees.

Both engines keep every training row's score up to date as trees are added, and score validation rows through the new
trees only (LightGBM as it trains, for a validation set added to it; XGBoost from its prediction cache): a loss costs a
pass over the rows, not a prediction with every tree. A model's shape is read at a look (every few steps and at the
last): the gain by feature from the engine's importance, and whether the newest rounds' trees reached the configured
cap, from a text dump of those trees alone.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from kiln.training.debugger.observation import Observation, TreeStats
from kiln.training.debugger.probe import TREES, loss_name, sample_rows, scored_rows, tree_stats
from kiln.training.family import Learner
from kiln.training.lgbm import LgbmLearner
from kiln.training.xgb import XgbLearner

if TYPE_CHECKING:
    from kiln.training.prepare import Prepared

TRAIN_SAMPLE = "train_sample"  # the name of a sample of the training rows scored like a validation set
VALID_SHARE, MIN_VALID_ROWS = 20, 100
ROUNDS_A_LOOK = 5  # the newest rounds whose trees' shape a look reads (dumping every tree costs more than training)


def loss_rows(prep: "Prepared", rows: int) -> dict[str, tuple[Any, Any]]:
    """The rows scored besides the booster's training rows: a sample of validation rows, and a training sample when
    there are so many training rows that even the engine's pass over their running scores costs more.

    Each new tree is run over the validation sample, at a sizeable share of what training costs a row: the sample is
    kept to ``VALID_SHARE`` of the training rows, and at most ``rows``."""
    valid = sample_rows(len(prep.y["valid"]), max(MIN_VALID_ROWS, min(rows, len(prep.y["train"]) // VALID_SHARE)))
    out = {"valid": (prep.x["valid"][valid], prep.y["valid"][valid])}
    train = scored_rows(len(prep.y["train"]), rows)
    if train is not None:
        out[TRAIN_SAMPLE] = (prep.x["train"][train], prep.y["train"][train])
    return out


class LgbmProbe:
    """LightGBM: its metric of the task's objective (binary or multi log-loss, l2) on its training rows and on
    validation rows added as a validation set; num_leaves of the newest rounds' trees."""

    shows = frozenset({TREES})

    def __init__(self, learner: LgbmLearner, prep: "Prepared", names: list[str], rows: int) -> None:
        self.regression, self.loss, self.names = prep.task.kind == "regression", loss_name(prep.task), names
        self.rows = loss_rows(prep, rows)
        self.cap = int(learner.params["num_leaves"])
        self.booster: Any = None
        self.added: list[str] = []
        self.seen = self.inspected = self.at_cap = 0

    def _with_sets(self, learner: LgbmLearner, wanted: list[str]) -> Any:
        booster = learner.booster
        if booster is not self.booster:  # the first step, or a booster restored from a checkpoint
            self.booster, self.added = booster, []
        for name in wanted:
            if name not in self.added:
                # create_valid shares the training set's bins and, after a restore, its initial model; LightGBM sets
                # the process's OpenMP threads from each call's parameters, so the learner's thread count goes along
                x, y = self.rows[name]
                params = {"num_threads": learner.params["num_threads"], "verbose": -1}
                booster.add_valid(learner.dataset.create_valid(x, label=y, params=params), name)
                self.added.append(name)
        return booster

    def _loss(self, result: Any) -> float:
        value = float(result[2])  # (data name, metric name, value, higher is better)
        return math.sqrt(value) if self.regression else value  # l2 is the mean squared error

    def observe(self, learner: Learner, step: int, look: bool, valid_loss: float | None = None) -> Observation:
        assert isinstance(learner, LgbmLearner)
        wanted = ([] if valid_loss is not None else ["valid"]) + ([TRAIN_SAMPLE] if TRAIN_SAMPLE in self.rows else [])
        booster = self._with_sets(learner, wanted)
        losses = {r[0]: self._loss(r) for r in booster.eval_valid()} if self.added else {}
        train = losses[TRAIN_SAMPLE] if TRAIN_SAMPLE in self.rows else self._loss(booster.eval_train()[0])
        return Observation(step=step, train_loss=train, valid_loss=losses["valid"] if valid_loss is None else valid_loss,
                           trees=self._shape(booster) if look else None)

    def _shape(self, booster: Any) -> TreeStats:
        rounds = int(booster.current_iteration())
        if rounds > self.seen:
            newest = min(rounds - self.seen, ROUNDS_A_LOOK)
            leaves = _leaf_counts(booster.model_to_string(start_iteration=rounds - newest, num_iteration=newest))
            self.inspected += len(leaves)
            self.at_cap += sum(n >= self.cap for n in leaves)
            self.seen = rounds
        gains = booster.feature_importance(importance_type="gain")
        return tree_stats(self.inspected, self.at_cap, f"num_leaves {self.cap}", self.names,
                          {i: float(g) for i, g in enumerate(gains)})


def _leaf_counts(model: str) -> list[int]:
    """Each tree's num_leaves in LightGBM's text model (one "num_leaves=N" line per tree)."""
    # read from the text model of the newest trees: dump_model's JSON of the same trees takes several times longer
    counts, at = [], model.find("\nnum_leaves=")
    while at >= 0:
        end = model.find("\n", at + 12)
        counts.append(int(model[at + 12:end]))
        at = model.find("\nnum_leaves=", end)
    return counts


class XgbProbe:
    """XGBoost: its eval metric (logloss, mlogloss, rmse) on the training matrix, whose scores it caches, and on a
    validation matrix it scores with the new trees only; the depth of the newest rounds' trees."""

    shows = frozenset({TREES})

    def __init__(self, learner: XgbLearner, prep: "Prepared", names: list[str], rows: int) -> None:
        self.loss, self.names, self.threads = loss_name(prep.task), names, learner.params["nthread"]
        self.rows = loss_rows(prep, rows)
        self.matrices: dict[str, Any] = {}
        self.cap = int(learner.params["max_depth"])
        self.seen = self.inspected = self.at_cap = 0

    def _matrix(self, name: str) -> Any:
        if name not in self.matrices:
            import xgboost as xgb

            x, y = self.rows[name]
            self.matrices[name] = xgb.DMatrix(x, label=y, nthread=self.threads)
        return self.matrices[name]

    def observe(self, learner: Learner, step: int, look: bool, valid_loss: float | None = None) -> Observation:
        assert isinstance(learner, XgbLearner)
        booster = learner.booster
        sets = [(learner.train if TRAIN_SAMPLE not in self.rows else self._matrix(TRAIN_SAMPLE), "train")]
        if valid_loss is None:
            sets.append((self._matrix("valid"), "valid"))
        text = booster.eval_set(sets, step)  # "[step]\ttrain-logloss:0.41\tvalid-logloss:0.47"
        values = [float(part.rsplit(":", 1)[1]) for part in text.split("\t")[1:]]
        return Observation(step=step, train_loss=values[0], valid_loss=values[1] if valid_loss is None else valid_loss,
                           trees=self._shape(booster) if look else None)

    def _shape(self, booster: Any) -> TreeStats:
        rounds = int(booster.num_boosted_rounds())
        if rounds != self.seen:  # new rounds, or a booster restored from a checkpoint
            newest = min(abs(rounds - self.seen), ROUNDS_A_LOOK)
            depths = [_depth(tree) for tree in booster[rounds - newest:rounds].get_dump()]
            self.inspected += len(depths)
            self.at_cap += sum(d >= self.cap for d in depths)
            self.seen = rounds
        gains = booster.get_score(importance_type="total_gain")  # {"f3": gain}: the matrix has no feature names
        return tree_stats(self.inspected, self.at_cap, f"max_depth {self.cap}", self.names,
                          {int(k[1:]): float(v) for k, v in gains.items()})


def _depth(tree: str) -> int:
    """A tree's depth in XGBoost's text dump, where a node is indented by one tab per level."""
    return max(len(line) - len(line.lstrip("\t")) for line in tree.splitlines() if line)
