"""KServe runtimes for Kiln models: V1 (`/v1/models/NAME:predict`) and V2 (Open Inference Protocol) routes.

A Kiln model is an MLflow pyfunc (encoder + LightGBM, XGBoost or ONNX); load() resolves `models:/NAME@ALIAS` once.
OnnxModel (onnx_model.py) serves the ONNX graph of the same version with ONNX Runtime alone, TvmModel (tvm_model.py)
a compiled, signed bundle of it. Answers carry the columns of the model's task (see Predictor.predict): one object
per row on V1, one output per column on V2; V2 model metadata names, types and shapes both.
"""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any

import kserve
import mlflow.pyfunc
import numpy as np
from kserve.errors import InvalidInput

from kiln.data.task import Task
from kiln.serving.schema import MAX_INSTANCES, InputSchema, RequestError
from kiln.training.predictor import answer_columns

log = logging.getLogger(__name__)
WARM_UP_CALLS = 3


class KilnModel(kserve.Model):
    """Serves one registered model version: validates each request against its input schema, then predicts."""

    # A multi-model server's V1 answers name the version that gave them, as V2's do (the capture files them so).
    names_v1_answers = False

    def __init__(self, name: str, model_uri: str) -> None:
        super().__init__(name)
        self.model_uri = model_uri
        self.schema: InputSchema | None = None
        self.predictor: Any = None
        self.version: str | None = None
        self.tensor_name: str | None = None  # runtimes that also take the encoded FP32 tensor on V2 set these
        self.width = 0
        self.encoder: Any = None  # the version's kiln.training.encoding.Encoder
        self.task = Task("binary", (0, 1))  # and its task and decision threshold, set by load()
        self.threshold = 0.5

    def load(self) -> bool:
        model = mlflow.pyfunc.load_model(self.model_uri)
        self.predictor = model.unwrap_python_model().predictor
        self.encoder, self.task = self.predictor.encoder, self.predictor.task
        self.threshold = float(self.predictor.meta.get("threshold", 0.5))
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

    def rows(self, payload: Any) -> list[list[Any]]:
        """The request's rows, validated, each a list in schema order; InvalidInput (a 400) names what is wrong."""
        assert self.schema is not None  # KServe routes requests only to a loaded (ready) model
        try:
            if isinstance(payload, kserve.InferRequest):
                return self.schema.rows(self._v2_instances(payload))
            if not isinstance(payload, dict) or "instances" not in payload:
                raise RequestError("the body must be a JSON object with 'instances' (V1) or 'inputs' (V2)")
            return self.schema.rows(payload["instances"])
        except RequestError as exc:
            raise InvalidInput(str(exc)) from None

    def tensor(self, payload: Any) -> np.ndarray | None:
        """A V2 request's own encoded input, checked: one FP32 tensor ``tensor_name`` of shape [N, width] with
        finite values; None for any other request (feature rows)."""
        name, width = self.tensor_name, self.width
        if name is None or not isinstance(payload, kserve.InferRequest) or not payload.inputs \
                or payload.inputs[0].name != name:
            return None
        item = payload.inputs[0]
        if len(payload.inputs) != 1 or item.datatype != "FP32":
            raise InvalidInput(f"input '{name}' must be the only input, with datatype FP32")
        if len(item.shape) != 2 or item.shape[1] != width or not 1 <= item.shape[0] <= MAX_INSTANCES:
            raise InvalidInput(f"input '{name}' must have shape [N, {width}] with N from 1 to {MAX_INSTANCES}; "
                               f"got {item.shape}")
        try:
            data = item.data if isinstance(item.data, list) else item.as_numpy().reshape(-1).tolist()
        except Exception as exc:  # noqa: BLE001 - binary or undecodable tensor contents: the caller's mistake, not a 500
            raise InvalidInput(f"input '{name}': cannot read its data: {exc}") from None
        if any(isinstance(row, list) for row in data):  # V2 JSON allows the rows nested
            data = [v for row in data for v in (row if isinstance(row, list) else [row])]
        if len(data) != item.shape[0] * width or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in data):
            raise InvalidInput(f"input '{name}' must hold {item.shape[0] * width} finite numbers")
        return np.asarray(data, dtype=np.float32).reshape(item.shape[0], width)

    def encoded(self, payload: Any) -> np.ndarray:
        """The request as the model's encoded FP32 matrix: V2's own tensor as given, or feature rows through the
        runtime's ``encoder``."""
        x = self.tensor(payload)
        return x if x is not None else self.encoder.transform_rows(self.rows(payload))

    @staticmethod
    def _v2_instances(request: kserve.InferRequest) -> list[dict[str, Any]]:
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
        return [{k: v[i] for k, v in columns.items()} for i in range(n)]

    def output(self, x: np.ndarray) -> np.ndarray:
        """The task's raw output for encoded rows: P(positive), [N, K] probabilities, or values."""
        return np.asarray(self.predictor.output_matrix(x))

    def score(self, payload: Any) -> Columns:
        """The answer's columns (the task's, see Predictor.predict) for a validated request. Rows go from the
        request to the encoder to the model without a data frame: building frames cost 25 times the model."""
        return answer_columns(self.task, self.output(self.encoded(payload)).astype("float64"), self.threshold)

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        answer = self.score(payload)
        if isinstance(payload, kserve.InferRequest):
            return kserve.InferResponse(response_id=payload.id or str(uuid.uuid4()), model_name=self.name,
                                        infer_outputs=v2_outputs(answer))
        if self.names_v1_answers:
            return {"predictions": v1_records(answer), "model_name": self.name}
        return {"predictions": v1_records(answer)}

    def get_input_types(self) -> list[dict[str, Any]]:
        """V2 model metadata's inputs: one tensor per feature, as V2 requests send them."""
        assert self.schema is not None
        return [{"name": c.name, "datatype": V2_TYPES.get(c.type, "BYTES"), "shape": [-1]} for c in self.schema.columns]

    def get_output_types(self) -> list[dict[str, Any]]:
        """V2 model metadata's outputs: one tensor per answer column, typed as answers carry them."""
        assert self.schema is not None
        answer = self.score({"instances": [dict.fromkeys(self.schema.names)]})
        return [{"name": o.name, "datatype": o.datatype, "shape": [-1]} for o in v2_outputs(answer)]


Columns = dict[str, np.ndarray]
V2_TYPES = {"double": "FP64", "float": "FP32", "long": "INT64", "integer": "INT32", "boolean": "BOOL",
            "string": "BYTES"}


def v1_records(answer: Columns) -> list[dict[str, Any]]:
    """One object per row, values as plain JSON numbers and text."""
    names = list(answer)
    return [dict(zip(names, values)) for values in zip(*(answer[n].tolist() for n in names))]


def v2_outputs(answer: Columns) -> list[kserve.InferOutput]:
    """One V2 output tensor per answer column: FP64 numbers, INT64 whole numbers, BYTES text."""
    outputs = []
    for name, column in answer.items():
        kind = column.dtype.kind
        datatype = "FP64" if kind == "f" else "INT64" if kind in "iub" else "BYTES"
        values = column.astype(str).tolist() if datatype == "BYTES" else column.astype(
            "float64" if kind == "f" else "int64").tolist()
        outputs.append(kserve.InferOutput(name, [len(column)], datatype, values))
    return outputs
