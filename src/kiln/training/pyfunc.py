"""The MLflow pyfunc face of a Kiln model: `mlflow.pyfunc.load_model("models:/NAME@ALIAS").predict(frame)`.

Logged as a model from code (this file), so loading runs no unpickled code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.models
import pandas as pd
from mlflow.pyfunc.model import PythonModel  # mlflow.pyfunc.PythonModel; mypy sees mlflow.pyfunc as a LazyLoader

from kiln.training.predictor import Predictor


class KilnModel(PythonModel):
    """Loads the saved model folder once; answers rows of features as its task does (see Predictor.predict)."""

    def load_context(self, context: Any) -> None:  # mlflow.pyfunc.PythonModelContext
        self.predictor = Predictor.load(Path(context.artifacts["model_folder"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return self.predictor.predict(model_input)


mlflow.models.set_model(KilnModel())
