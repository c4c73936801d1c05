"""A registered version as what the compiler takes: a standard-op ONNX graph, its encoder and held-out rows."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.compile.entry_graph import COMPILES, entry_graph
from kiln.data.task import Task
from kiln.errors import InputError
from kiln.registry.versions import get_version
from kiln.training.data import load_training_set
from kiln.training.encoding import Encoder
from kiln.training.entry import ENTRY_FAMILY
from kiln.training.predictor import ENCODER_FILE, META_FILE
from kiln.training.split import split
from kiln.training.tree_onnx import lgbm_to_onnx
from kiln.training.xgb_onnx import xgb_to_onnx
from kiln.workspace import Workspace

if TYPE_CHECKING:
    import numpy as np
    import onnx

SAMPLE_ROWS = 512  # held-out rows the parity check runs


@dataclass
class SourceModel:
    name: str
    version: str
    family: str
    graph: "onnx.ModelProto"  # input "features" FLOAT [batch, width]; output "probabilities" [batch, K] or "value"
    encoder: dict[str, Any]  # kiln.training.encoding.Encoder.to_dict(): how feature rows become the input tensor
    meta: dict[str, Any]  # the version's kiln-model.json: family, threshold, features, label
    width: int
    feature_names: list[str]  # the encoded columns, in tensor order
    # the version's own answers for encoded rows where its graph was not built by Kiln (an entry point's predict()):
    # the compiler checks the graph against them first
    answers: Callable[["np.ndarray"], "np.ndarray"] | None = None
    schema: list[dict[str, str]] | None = None  # the version's input columns and MLflow types, for model servers

    @property
    def threshold(self) -> float:
        return float(self.meta["threshold"])

    @property
    def task(self) -> Task:
        return Task.from_dict(self.meta.get("task"))

    def output(self) -> dict[str, Any]:
        """The graph's output as a manifest describes it: its tensor, shape and what each column holds."""
        task = self.task
        if task.kind == "regression":
            return {"name": "value", "dtype": "float32", "shape": [-1, 1], "columns": ["value"]}
        classes = list(task.classes) if task.kind == "multiclass" else [0, 1]
        return {"name": "probabilities", "dtype": "float32", "shape": [-1, len(classes)],
                "columns": [f"probability_{c}" for c in classes]}


def load_source(ws: Workspace, ref: str) -> SourceModel:
    """The version ``ref`` names, exported to ONNX with standard operators only."""
    import mlflow.artifacts
    from mlflow.models import Model

    info = get_version(ws, ref)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{info.name}/{info.version}"))
    mlmodel = Model.load(str(local))
    folder = local / mlmodel.flavors["python_function"]["artifacts"]["model_folder"]["path"]
    meta = json.loads((folder / META_FILE).read_text())
    encoder = json.loads((folder / ENCODER_FILE).read_text())
    names = Encoder.from_dict(encoder).output_names
    answers = None
    if meta["family"] == ENTRY_FAMILY:
        graph, answers = entry_graph(folder, meta, len(names), Task.from_dict(meta.get("task")))
    else:
        graph = export_graph(meta["family"], folder / meta["model_file"], len(names))
    signature = mlmodel.get_input_schema()  # type: ignore[no-untyped-call]  # MLflow leaves it unannotated
    schema = [{"name": c.name, "type": str(c.type).removeprefix("DataType.")} for c in signature.inputs] \
        if signature is not None else None
    return SourceModel(name=info.name, version=info.version, family=meta["family"], graph=graph, encoder=encoder,
                       meta=meta, width=len(names), feature_names=names, answers=answers, schema=schema)


def export_graph(family: str, model_file: Path, width: int) -> "onnx.ModelProto":
    """The model file as an ONNX graph of standard operators; families without an exporter are an InputError."""
    import onnx

    if family == "mlp":
        return onnx.load(str(model_file))
    if family == "lgbm":
        import lightgbm as lgb

        return lgbm_to_onnx(lgb.Booster(model_file=str(model_file)), width)
    if family == "xgb":
        import xgboost as xgb

        return xgb_to_onnx(xgb.Booster(model_file=str(model_file)), width)
    raise InputError(f"model family '{family}' has no exporter to standard ONNX operators",
                     hint=f"families that compile: mlp, lgbm, xgb, and entry points holding {COMPILES}")


def holdout_sample(ws: Workspace, source: SourceModel, rows: int = SAMPLE_ROWS) -> "np.ndarray":
    """Encoded held-out rows of the version's own training set (its test split), as float32."""
    import numpy as np

    tags = get_version(ws, f"{source.name}/{source.version}").tags
    path = Path(tags.get("kiln.training_set", ""))
    if not path.is_file():
        raise InputError(f"{source.name}/{source.version}: its training set {path} is gone, so there are no "
                         "held-out rows for the parity check", hint="pass --sample FILE with feature rows")
    data = load_training_set(path)
    if data.lineage["training_set_sha256"] != tags.get("kiln.training_set_sha256"):
        raise InputError(f"training set {path} changed since {source.name}/{source.version} was trained",
                         hint="pass --sample FILE with feature rows")
    test = split(data, int(tags.get("kiln.seed", "7"))).test.head(rows)
    return np.ascontiguousarray(Encoder.from_dict(source.encoder).transform(test), dtype=np.float32)


def file_sample(source: SourceModel, path: Path, rows: int = SAMPLE_ROWS) -> "np.ndarray":
    """Feature rows from a parquet or CSV file, encoded with the version's encoder."""
    import numpy as np
    import pandas as pd

    if not path.is_file():
        raise InputError(f"sample file {path} does not exist")
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    if frame.empty:
        raise InputError(f"sample file {path} has no rows")
    return np.ascontiguousarray(Encoder.from_dict(source.encoder).transform(frame.head(rows)), dtype=np.float32)
