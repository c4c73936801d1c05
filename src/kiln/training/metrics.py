"""Classification quality of predicted probabilities at a threshold, and their calibration."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

CALIBRATION_BINS = 10


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
