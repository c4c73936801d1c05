"""A Kiln model with a fault injected, logged from code for rollout tests: KILN_FAULT=fail (every second
request raises) or KILN_FAULT=slow (each answer 300 ms late). The fault is chosen when the model is logged."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import mlflow.models
import mlflow.pyfunc
import pandas as pd


class _Faulty:
    """A kiln Predictor whose answers fail or come late: through predict() (a data frame, MLflow's pyfunc) and
    output_matrix() (encoded rows, what Kiln's model server calls)."""

    def __init__(self, inner, fault: str) -> None:  # a kiln Predictor
        self.inner, self.fault, self.calls = inner, fault, itertools.count()

    def __getattr__(self, name: str):
        return getattr(self.inner, name)  # encoder, task, meta: the inner predictor's

    def _fault(self) -> None:
        if self.fault == "fail" and next(self.calls) % 2:
            raise RuntimeError("injected fault: every second request fails")
        if self.fault == "slow":
            time.sleep(0.3)

    def output_matrix(self, x):
        self._fault()
        return self.inner.output_matrix(x)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        self._fault()
        return self.inner.predict(frame)


class FaultyModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from kiln.training.predictor import Predictor

        fault = Path(context.artifacts["fault"]).read_text().strip()
        self.predictor = _Faulty(Predictor.load(Path(context.artifacts["model_folder"])), fault)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.predictor.predict(model_input)


mlflow.models.set_model(FaultyModel())
