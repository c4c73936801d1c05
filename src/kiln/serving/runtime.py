"""KServe runtimes for Kiln models: V1 (`/v1/models/NAME:predict`) and V2 (Open Inference Protocol) routes.

A Kiln model is an MLflow pyfunc (encoder + LightGBM, XGBoost or ONNX); load() resolves `models:/NAME@ALIAS` once.
OnnxModel (onnx_model.py) serves the ONNX graph of the same version with ONNX Runtime alone. Answers carry the
columns of the model's task (see Predictor.predict): one object per row on V1, one output per column on V2.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

import kserve
import mlflow.pyfunc
from kserve.errors import InvalidInput

from kiln.serving.schema import InputSchema, RequestError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
WARM_UP_CALLS = 3


class KilnModel(kserve.Model):
    """Serves one registered model version: validates each request against its input schema, then predicts."""

    def __init__(self, name: str, model_uri: str) -> None:
        super().__init__(name)
        self.model_uri = model_uri
        self.schema: InputSchema | None = None
        self.predictor: Any = None
        self.version: str | None = None

    def load(self) -> bool:
        model = mlflow.pyfunc.load_model(self.model_uri)
        self.predictor = model.unwrap_python_model().predictor
        self.schema = InputSchema.from_mlflow(model.metadata.get_input_schema())
        self.version = self.model_uri
        self.warm()
        self.ready = True
        return self.ready

    def warm(self) -> None:
        """Score a row of missing values a few times before reporting ready, so the first requests a
        rollout judges are not slowed by first-call costs (imports, allocations) in the model."""
        assert self.schema is not None  # load() sets it before warming up
        row = {"instances": [dict.fromkeys(self.schema.names)]}
        for _ in range(WARM_UP_CALLS):
            try:
                self.score(row)
            except Exception as exc:  # noqa: BLE001 - a model that fails on real requests is the guardrails' to judge
                log.warning("warm-up request to %s failed: %s", self.model_uri, exc)

    def frame(self, payload: Any) -> Any:
        """The request's rows as a validated frame; InvalidInput (a 400) names what is wrong."""
        assert self.schema is not None  # KServe routes requests only to a loaded (ready) model
        try:
            if isinstance(payload, kserve.InferRequest):
                return self._v2_frame(payload)
            if not isinstance(payload, dict) or "instances" not in payload:
                raise RequestError("the body must be a JSON object with 'instances' (V1) or 'inputs' (V2)")
            return self.schema.frame(payload["instances"])
        except RequestError as exc:
            raise InvalidInput(str(exc)) from None

    def _v2_frame(self, request: kserve.InferRequest) -> Any:
        """V2 inputs are one tensor per feature (shape [N] or [N, 1]), named as the features."""
        columns: dict[str, list[Any]] = {}
        for item in request.inputs:
            data = item.data if isinstance(item.data, list) else list(item.as_numpy().reshape(-1))
            if item.datatype == "BYTES":
                data = [v.decode() if isinstance(v, bytes) else v for v in data]
            columns[item.name] = data
        sizes = {len(v) for v in columns.values()}
        if len(sizes) > 1:
            raise RequestError(f"V2 inputs must all have the same length; got {sorted(sizes)}")
        n = sizes.pop() if sizes else 0
        assert self.schema is not None  # KServe routes requests only to a loaded (ready) model
        return self.schema.frame([{k: v[i] for k, v in columns.items()} for i in range(n)])

    def score(self, payload: Any) -> "pd.DataFrame":
        """The answer frame (the task's columns) for a validated request."""
        return self.predictor.predict(self.frame(payload))

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        answer = self.score(payload)
        if isinstance(payload, kserve.InferRequest):
            return kserve.InferResponse(response_id=payload.id or str(uuid.uuid4()), model_name=self.name,
                                        infer_outputs=v2_outputs(answer))
        return {"predictions": answer.to_dict(orient="records")}


def v2_outputs(answer: "pd.DataFrame") -> list[kserve.InferOutput]:
    """One V2 output tensor per answer column: FP64 numbers, INT64 whole numbers, BYTES text."""
    outputs = []
    for name in answer.columns:
        column = answer[name]
        kind = column.dtype.kind
        datatype = "FP64" if kind == "f" else "INT64" if kind in "iub" else "BYTES"
        values = column.astype(str).tolist() if datatype == "BYTES" else column.tolist()
        outputs.append(kserve.InferOutput(str(name), [len(column)], datatype, values))
    return outputs
