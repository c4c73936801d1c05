"""Scoring a registered model on feature rows: the shared prediction helpers of evaluation, Clarify and monitors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kiln.data.task import Task

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# The column that holds a model's predicted class beside the true label, for bias metrics.
PREDICTED = "__kiln_predicted"

def predict_with(model_uri: str, frame: "pd.DataFrame") -> "pd.DataFrame":
    """Probability and prediction of an MLflow model (a Kiln pyfunc) for ``frame``.

    A KeyError names the inputs the model needs that ``frame`` lacks.
    """
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(model_uri)
    return model.predict(conform(frame, model.metadata.get_input_schema()))


def conform(frame: "pd.DataFrame", schema: Any) -> "pd.DataFrame":
    """The schema's columns of ``frame``, integers widened to the doubles Kiln models declare."""
    if schema is None:
        return frame
    missing = [c for c in schema.input_names() if c not in frame.columns]
    if missing:
        raise KeyError(", ".join(missing))
    out = frame[schema.input_names()].copy()
    for spec in schema.inputs:
        if str(spec.type) in ("double", "DataType.double") and out[spec.name].dtype.kind in "iub":
            out[spec.name] = out[spec.name].astype("float64")
    return out


def output_of(task: Task, scored: "pd.DataFrame") -> "np.ndarray":
    """The task's raw output (as the metrics take it) from a Kiln model's answer frame.

    A KeyError names the columns a model of this task answers that ``scored`` lacks.
    """
    if task.kind == "binary":
        wanted = ["probability"]
    elif task.kind == "multiclass":
        wanted = [f"probability_{c}" for c in task.classes]
    else:
        wanted = ["prediction"]
    missing = [c for c in wanted if c not in scored.columns]
    if missing:
        raise KeyError(", ".join(missing))
    import numpy as np

    values = np.asarray(scored[wanted].to_numpy(dtype="float64"))
    return values if task.kind == "multiclass" else values[:, 0]
