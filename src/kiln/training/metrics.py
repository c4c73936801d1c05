"""Quality of a model's outputs for its task: classification at a threshold and calibration, several classes,
numbers; and the one metric a task is tuned and gated on."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kiln.data.task import Task
from kiln.settings import LOWER_IS_BETTER

if TYPE_CHECKING:
    import numpy as np

CALIBRATION_BINS = 10
Metrics = dict[str, float | None]


@dataclass(frozen=True)
class Objective:
    """The metric a task is tuned on, and whether more of it is better."""

    metric: str

    @property
    def greater_is_better(self) -> bool:
        return self.metric not in LOWER_IS_BETTER

    @property
    def mode(self) -> str:
        """Ray Tune's name for the direction."""
        return "max" if self.greater_is_better else "min"

    @property
    def label(self) -> str:
        return "validation " + METRIC_NAMES.get(self.metric, self.metric)

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b``."""
        return a > b if self.greater_is_better else a < b

    def missing(self) -> float:
        """The score of a metric undefined on these rows (AUC with one class): worse than any real one."""
        return 0.0 if self.greater_is_better else 1e12


# How a metric is named for people (progress lines, plots, the gate's checks).
METRIC_NAMES = {"auc": "AUC", "pr_auc": "PR-AUC", "f1": "F1", "f1_macro": "macro F1", "f1_weighted": "weighted F1",
                "log_loss": "log-loss", "rmse": "RMSE", "mae": "MAE", "r2": "R²", "mape": "MAPE"}
OBJECTIVES = {"binary": Objective("auc"), "multiclass": Objective("log_loss"), "regression": Objective("rmse")}


def objective(task: Task) -> Objective:
    return OBJECTIVES[task.kind]


def task_metrics(task: Task, y: "np.ndarray", output: "np.ndarray", threshold: float = 0.5) -> Metrics:
    """The task's metrics of ``output`` (P(positive) for binary, class probabilities [N, K] for multiclass, values
    for regression) against the labels ``y`` (class indexes, or numbers)."""
    if task.kind == "binary":
        return classification_metrics(y, output, threshold)
    if task.kind == "multiclass":
        return multiclass_metrics(y, output, task.classes)
    return regression_metrics(y, output)


def multiclass_metrics(y: "np.ndarray", p: "np.ndarray", classes: tuple[Any, ...]) -> Metrics:
    """Accuracy, macro and weighted F1, log-loss, and recall of each class (``recall_<class>``)."""
    import numpy as np
    from sklearn import metrics as m

    y = np.asarray(y).astype(int)
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    pred = p.argmax(axis=1)
    labels = list(range(len(classes)))
    recalls = m.recall_score(y, pred, labels=labels, average=None, zero_division=0)
    out: Metrics = {
        "accuracy": float(m.accuracy_score(y, pred)),
        "f1_macro": float(m.f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "f1_weighted": float(m.f1_score(y, pred, labels=labels, average="weighted", zero_division=0)),
        "log_loss": float(m.log_loss(y, p, labels=labels)),
    }
    present = set(y.tolist())
    for i, c in enumerate(classes):
        out[f"recall_{c}"] = float(recalls[i]) if i in present else None
    out["rows"] = float(len(y))
    return out


def regression_metrics(y: "np.ndarray", pred: "np.ndarray") -> Metrics:
    """RMSE, MAE, R² and MAPE (over rows whose label is not zero; None when every label is)."""
    import numpy as np
    from sklearn import metrics as m

    y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
    nonzero = np.abs(y) > 1e-12
    return {
        "rmse": float(np.sqrt(m.mean_squared_error(y, pred))),
        "mae": float(m.mean_absolute_error(y, pred)),
        "r2": float(m.r2_score(y, pred)) if len(y) > 1 else None,
        "mape": float(np.mean(np.abs((y[nonzero] - pred[nonzero]) / y[nonzero]))) if nonzero.any() else None,
        "rows": float(len(y)),
    }


def classification_metrics(y: "np.ndarray", p: "np.ndarray", threshold: float = 0.5) -> dict[str, float | None]:
    """AUC, PR-AUC, F1, precision, recall, accuracy, log-loss, Brier score and expected calibration error.

    A metric that is undefined for these labels (AUC with one class) is None.
    """
    import numpy as np
    from sklearn import metrics as m

    y = np.asarray(y).astype(int)
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    pred = (p >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    return {
        "auc": float(m.roc_auc_score(y, p)) if both else None,
        "pr_auc": float(m.average_precision_score(y, p)) if both else None,
        "f1": float(m.f1_score(y, pred, zero_division=0)),
        "precision": float(m.precision_score(y, pred, zero_division=0)),
        "recall": float(m.recall_score(y, pred, zero_division=0)),
        "accuracy": float(m.accuracy_score(y, pred)),
        "log_loss": float(m.log_loss(y, p, labels=[0, 1])),
        "brier": float(m.brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "positive_rate": float(pred.mean()),
        "threshold": float(threshold),
        "rows": float(len(y)),
    }


def calibration_table(y: "np.ndarray", p: "np.ndarray", bins: int = CALIBRATION_BINS) -> list[dict[str, Any]]:
    """Per equal-width probability bin: rows, mean predicted probability, observed positive share."""
    import numpy as np

    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    table = []
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        table.append({"bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}", "rows": n,
                      "predicted": float(p[mask].mean()) if n else None,
                      "observed": float(y[mask].mean()) if n else None})
    return table


def expected_calibration_error(y: "np.ndarray", p: "np.ndarray", bins: int = CALIBRATION_BINS) -> float:
    """Row-weighted mean gap between predicted probability and observed positive share over the bins."""
    table = calibration_table(y, p, bins)
    total = sum(row["rows"] for row in table)
    gap = sum(row["rows"] * abs(row["predicted"] - row["observed"]) for row in table if row["rows"])
    return float(gap / total) if total else math.nan
