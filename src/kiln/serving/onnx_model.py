"""The ONNX Runtime runtime: a registered version's ONNX graph served by ONNX Runtime, without MLflow's pyfunc.

Requests are the same feature rows the MLflow runtime takes (encoded here with the version's own encoder), or,
on V2, the graph's own input tensor of encoded float32 features (what KServe's ONNX runtime takes in a cluster).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.artifacts
import numpy as np
import onnxruntime as ort
from mlflow.models import Model

from kiln.serving.runtime import KilnModel
from kiln.serving.schema import InputSchema
from kiln.training.encoding import Encoder
from kiln.training.predictor import ENCODER_FILE, META_FILE, Predictor


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
        self.task, self.threshold = self.graph.task, float(meta["threshold"])
        self.schema = InputSchema.from_mlflow(mlmodel.get_input_schema())  # type: ignore[no-untyped-call]  # MLflow leaves Model.get_input_schema unannotated
        self.version = self.model_uri
        self.warm()
        self.ready = True
        return self.ready

    def output(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.graph.output_matrix(x))
