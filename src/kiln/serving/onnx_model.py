"""The ONNX Runtime runtime: a registered version's ONNX graph served by ONNX Runtime, without MLflow's pyfunc.

Requests are the same feature rows the MLflow runtime takes (encoded here with the version's own encoder), or,
on V2, the graph's own input tensor of encoded float32 features (what KServe's ONNX runtime takes in a cluster).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import kserve
import mlflow.artifacts
import numpy as np
import onnxruntime as ort
from kserve.errors import InvalidInput
from mlflow.models import Model

from kiln.serving.runtime import KilnModel
from kiln.serving.schema import MAX_INSTANCES, InputSchema
from kiln.training.encoding import Encoder
from kiln.training.predictor import ENCODER_FILE, META_FILE, Predictor, answer_frame


class NoOnnxGraph(RuntimeError):
    """The model version has no ONNX graph (a tree model): it is served by the mlflow runtime instead."""


class OnnxModel(KilnModel):
    def load(self) -> bool:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=self.model_uri))
        mlmodel = Model.load(str(local))
        folder = local / mlmodel.flavors["python_function"]["artifacts"]["model_folder"]["path"]
        meta = json.loads((folder / META_FILE).read_text())
        if not meta["model_file"].endswith(".onnx"):
            raise NoOnnxGraph(f"{self.model_uri} is a {meta['family']} model with no ONNX graph; "
                              "serve it with runtime mlflow")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(folder / meta["model_file"]), options,
                                            providers=["CPUExecutionProvider"])
        graph_input = self.session.get_inputs()[0]
        self.tensor_name, self.width = graph_input.name, graph_input.shape[1]
        self.encoder = Encoder.from_dict(json.loads((folder / ENCODER_FILE).read_text()))
        self.graph = Predictor(meta=meta, encoder=self.encoder, runner=self.session)
        self.schema = InputSchema.from_mlflow(mlmodel.get_input_schema())  # type: ignore[no-untyped-call]  # MLflow leaves Model.get_input_schema unannotated
        self.version = self.model_uri
        self.warm()
        self.ready = True
        return self.ready

    def _tensor(self, request: kserve.InferRequest) -> Any:
        """The graph's own input, checked: one FP32 tensor of shape [N, width] with finite values."""
        item = request.inputs[0]
        if len(request.inputs) != 1 or item.datatype != "FP32":
            raise InvalidInput(f"input '{self.tensor_name}' must be the only input, with datatype FP32")
        if len(item.shape) != 2 or item.shape[1] != self.width or not 1 <= item.shape[0] <= MAX_INSTANCES:
            raise InvalidInput(f"input '{self.tensor_name}' must have shape [N, {self.width}] with N from 1 to "
                               f"{MAX_INSTANCES}; got {item.shape}")
        try:
            data = item.data if isinstance(item.data, list) else item.as_numpy().reshape(-1).tolist()
        except Exception as exc:  # noqa: BLE001 - binary or undecodable tensor contents: the caller's mistake, not a 500
            raise InvalidInput(f"input '{self.tensor_name}': cannot read its data: {exc}") from None
        if any(isinstance(row, list) for row in data):  # V2 JSON allows the rows nested
            data = [v for row in data for v in (row if isinstance(row, list) else [row])]
        if len(data) != item.shape[0] * self.width or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in data):
            raise InvalidInput(f"input '{self.tensor_name}' must hold {item.shape[0] * self.width} finite numbers")
        return np.asarray(data, dtype=np.float32).reshape(item.shape[0], self.width)

    def score(self, payload: Any) -> Any:
        raw = isinstance(payload, kserve.InferRequest) and payload.inputs and \
            payload.inputs[0].name == self.tensor_name
        x = self._tensor(payload) if raw else self.encoder.transform(self.frame(payload))
        out = self.graph.output_matrix(x).astype("float64")
        return answer_frame(self.graph.task, out, float(self.graph.meta["threshold"]))
