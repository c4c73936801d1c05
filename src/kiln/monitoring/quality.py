"""Model quality: Evidently's classification or regression metrics on labelled rows, and the violations against a
baseline."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from kiln.data.task import Task
from kiln.monitoring.violations import Violation
from kiln.settings import LOWER_IS_BETTER

if TYPE_CHECKING:
    import pandas as pd

LABEL, PREDICTED, PROBABILITY = "label", "prediction", "probability"
# Evidently metric type -> Kiln's name for it (for multiclass, Evidently's F1, precision and recall are macro means)
METRICS = {
    "binary": {"Accuracy": "accuracy", "Precision": "precision", "Recall": "recall", "F1Score": "f1",
               "RocAuc": "roc_auc", "LogLoss": "log_loss"},
    "multiclass": {"Accuracy": "accuracy", "Precision": "precision_macro", "Recall": "recall_macro",
                   "F1Score": "f1_macro", "LogLoss": "log_loss"},
    "regression": {"RMSE": "rmse", "MAE": "mae", "R2Score": "r2", "MAPE": "mape", "MeanError": "mean_error"},
}


def model_quality(task: Task, labelled: "pd.DataFrame", threshold: float) -> tuple[dict[str, float | None], Any]:
    """(metrics, Evidently snapshot) of ``labelled``'s answers (the columns a Kiln model answers with) against its
    LABEL column, for the model's task."""
    if task.kind == "binary":
        return classification_quality(labelled[LABEL].to_numpy(), labelled[PROBABILITY].to_numpy(), threshold)
    if task.kind == "multiclass":
        return multiclass_quality(task, labelled)
    return regression_quality(labelled[LABEL].to_numpy(), labelled[PREDICTED].to_numpy())


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
    metrics = _read(snapshot, METRICS["binary"])
    if len(set(y.tolist())) < 2:
        metrics["roc_auc"] = None  # undefined with one class
    metrics["positive_rate"] = float(frame[PREDICTED].mean()) if len(frame) else None
    metrics["label_rate"] = float(y.mean()) if len(y) else None
    return metrics, snapshot


def multiclass_quality(task: Task, labelled: "pd.DataFrame") -> tuple[dict[str, float | None], Any]:
    """Accuracy, macro precision, recall and F1, and log-loss (from each class's probability) by Evidently."""
    import pandas as pd
    from evidently import DataDefinition, Dataset, MulticlassClassification, Report
    from evidently.metrics import Accuracy, F1Score, LogLoss, Precision, Recall
    from evidently.presets import ClassificationPreset

    classes = [str(c) for c in task.classes]
    frame = pd.DataFrame({LABEL: labelled[LABEL].astype(str).to_numpy(),
                          PREDICTED: labelled[PREDICTED].astype(str).to_numpy()})
    for c in classes:
        frame[c] = labelled[f"probability_{c}"].astype("float64").to_numpy()
    definition = DataDefinition(classification=[MulticlassClassification(
        target=LABEL, prediction_labels=PREDICTED, prediction_probas=classes)])
    # The preset's per-class tables fail (KeyError) on a class no labelled row has; the overall metrics do not.
    every_class = set(classes) <= set(frame[LABEL])
    metrics = [ClassificationPreset()] if every_class else [Accuracy(), Precision(), Recall(), F1Score(), LogLoss()]
    snapshot = Report(metrics).run(Dataset.from_pandas(frame, definition), None)
    return _read(snapshot, METRICS["multiclass"]), snapshot


def regression_quality(y: Any, predicted: Any) -> tuple[dict[str, float | None], Any]:
    """RMSE, MAE, R², MAPE and the mean error (bias of the predictions) by Evidently's regression preset."""
    import numpy as np
    import pandas as pd
    from evidently import DataDefinition, Dataset, Regression, Report
    from evidently.presets import RegressionPreset

    frame = pd.DataFrame({LABEL: np.asarray(y, dtype="float64"), PREDICTED: np.asarray(predicted, dtype="float64")})
    definition = DataDefinition(regression=[Regression(target=LABEL, prediction=PREDICTED)])
    snapshot = Report([RegressionPreset()]).run(Dataset.from_pandas(frame, definition), None)
    metrics = _read(snapshot, METRICS["regression"])
    metrics["label_mean"] = float(frame[LABEL].mean()) if len(frame) else None
    return metrics, snapshot


def _read(snapshot: Any, names: dict[str, str]) -> dict[str, float | None]:
    """Kiln's names for the snapshot's metric values (a mean where Evidently gives a mean and a spread)."""
    metrics: dict[str, float | None] = dict.fromkeys(names.values())
    for m in snapshot.dict()["metrics"]:
        name = names.get(m["config"]["type"].rsplit(":", 1)[-1])
        value = m["value"]["mean"] if isinstance(m["value"], dict) and "mean" in m["value"] else m["value"]
        if name and isinstance(value, (int, float)):
            metrics[name] = None if math.isnan(value) else float(value)
    return metrics


def quality_violations(baseline: dict[str, Any], observed: dict[str, Any], checked: list[str],
                       tolerance: float) -> list[Violation]:
    """Each checked metric worse than the baseline's by more than ``tolerance``: below it by that much for a score
    (AUC, accuracy, F1, R²), above it by that share of it for an error (log-loss, RMSE, MAE, MAPE: their scale is the
    label's)."""
    out = []
    for name in checked:
        base, now = baseline.get(name), observed.get(name)
        if base is None or now is None:
            continue
        lower = name in LOWER_IS_BETTER
        limit = base * (1 + tolerance) if lower else base - tolerance
        if (now > limit) if lower else (now < limit):
            out.append(Violation("model_quality", "*", name, round(base, 6), round(now, 6), round(limit, 6),
                                 f"{name} {now:.4f} on {observed.get('rows')} labelled rows, baseline {base:.4f}"))
    return out
