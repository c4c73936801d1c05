"""The MLflow pyfunc face of a Kiln model: `mlflow.pyfunc.load_model("models:/NAME@ALIAS").predict(frame)`.

Logged as a model from code (this file), so loading runs no unpickled code.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.models
import mlflow.pyfunc
import pandas as pd

from kiln.training.predictor import Predictor


class KilnClassifier(mlflow.pyfunc.PythonModel):
    """Loads the saved model folder once; predicts `probability` and `prediction` for rows of features."""

    def load_context(self, context) -> None:  # MLflow's context object
        self.predictor = Predictor.load(Path(context.artifacts["model_folder"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.predictor.predict(model_input)


mlflow.models.set_model(KilnClassifier())
