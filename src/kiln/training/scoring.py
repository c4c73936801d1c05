"""Scoring a registered model on feature rows: the shared prediction helpers of evaluation, Clarify and monitors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
