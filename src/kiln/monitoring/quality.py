"""Model quality: Evidently's classification metrics on labelled rows, and the violations against a baseline."""

from __future__ import annotations

import math
from typing import Any

from kiln.monitoring.violations import Violation

LABEL, PREDICTED, PROBABILITY = "label", "prediction", "probability"
# Evidently metric type -> Kiln's name for it
METRICS = {"Accuracy": "accuracy", "Precision": "precision", "Recall": "recall", "F1Score": "f1",
           "RocAuc": "roc_auc", "LogLoss": "log_loss"}


def classification_quality(y: Any, probability: Any, threshold: float) -> tuple[dict[str, float | None], Any]:
    """(metrics, Evidently snapshot) of binary labels ``y`` against predicted probabilities."""
    import numpy as np
    import pandas as pd
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset

    y = np.asarray(y).astype(int)
    p = np.asarray(probability, dtype="float64")
    frame = pd.DataFrame({LABEL: y, PREDICTED: (p >= threshold).astype(int), PROBABILITY: p})
    definition = DataDefinition(classification=[BinaryClassification(
        target=LABEL, prediction_labels=PREDICTED, prediction_probas=PROBABILITY, pos_label=1)])
    snapshot = Report([ClassificationPreset()]).run(Dataset.from_pandas(frame, definition), None)
    metrics: dict[str, float | None] = dict.fromkeys(METRICS.values())
    for m in snapshot.dict()["metrics"]:
        name = METRICS.get(m["config"]["type"].rsplit(":", 1)[-1])
        if name and isinstance(m["value"], (int, float)):
            metrics[name] = None if math.isnan(m["value"]) else float(m["value"])
    if len(set(y.tolist())) < 2:
        metrics["roc_auc"] = None  # undefined with one class
    metrics["positive_rate"] = float(frame[PREDICTED].mean()) if len(frame) else None
    metrics["label_rate"] = float(y.mean()) if len(y) else None
    return metrics, snapshot


def quality_violations(baseline: dict[str, Any], observed: dict[str, Any], checked: list[str],
                       tolerance: float) -> list[Violation]:
    """Each checked metric more than ``tolerance`` below the baseline's (higher is better for all of them)."""
    out = []
    for name in checked:
        base, now = baseline.get(name), observed.get(name)
        if base is None or now is None:
            continue
        if now < base - tolerance:
            out.append(Violation("model_quality", "*", name, round(base, 6), round(now, 6), round(base - tolerance, 6),
                                 f"{name} {now:.4f} on {observed.get('rows')} labelled rows, baseline {base:.4f}"))
    return out
