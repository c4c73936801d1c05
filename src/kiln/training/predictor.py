"""A saved model folder (encoder + model file + meta) that turns feature rows into the task's answers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from kiln.data.task import Task
from kiln.training.encoding import Encoder
from kiln.training.entry import EntryRunner

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

META_FILE = "kiln-model.json"
ENCODER_FILE = "encoder.json"


@dataclass
class Predictor:
    meta: dict[str, Any]  # family, config, threshold, features, label, task, model_file
    encoder: Encoder
    runner: Any  # a LightGBM or XGBoost Booster, an ONNX Runtime session, or an entry point's EntryRunner

    @property
    def task(self) -> Task:
        return Task.from_dict(self.meta.get("task"))

    @classmethod
    def load(cls, folder: Path) -> "Predictor":
        meta = json.loads((folder / META_FILE).read_text())
        encoder = Encoder.from_dict(json.loads((folder / ENCODER_FILE).read_text()))
        path = folder / meta["model_file"]
        if path.suffix == ".onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            runner = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        elif meta.get("entry_file"):  # the user's own training code: its flavor's model and its predict()
            runner = EntryRunner(folder, meta)
        elif path.name.endswith(".xgb.json"):
            import xgboost as xgb

            runner = xgb.Booster(model_file=str(path))
            runner.set_param({"nthread": 1})
        else:
            import lightgbm as lgb

            runner = lgb.Booster(model_file=str(path))
        return cls(meta=meta, encoder=encoder, runner=runner)

    @property
    def booster(self) -> Any | None:
        """The LightGBM or XGBoost booster of a built-in tree family (what reads its trees needs), else None."""
        return None if hasattr(self.runner, "run") or hasattr(self.runner, "entry") else self.runner

    def output_matrix(self, x: "np.ndarray") -> "np.ndarray":
        """The task's output for an already-encoded matrix: P(positive) for binary, [N, K] class probabilities for
        multiclass, values for regression."""
        import numpy as np

        if hasattr(self.runner, "entry"):
            return cast("np.ndarray", self.runner.output(np.ascontiguousarray(x, dtype=np.float32), self.task))
        if hasattr(self.runner, "run"):
            x = np.ascontiguousarray(x, dtype=np.float32)  # the ONNX graph takes float32 only
            out = self.runner.run(None, {self.runner.get_inputs()[0].name: x})[0]
            kind = self.task.kind
            return cast("np.ndarray", out[:, 1] if kind == "binary" else out[:, 0] if kind == "regression" else out)
        if hasattr(self.runner, "inplace_predict"):  # XGBoost
            return cast("np.ndarray", self.runner.inplace_predict(x))
        return cast("np.ndarray", self.runner.predict(x))

    def output(self, frame: "pd.DataFrame") -> "np.ndarray":
        return self.output_matrix(self.encoder.transform(frame))

    def predict_proba(self, frame: "pd.DataFrame") -> "np.ndarray":
        """P(positive class) of a binary model."""
        if self.task.kind != "binary":
            raise TypeError(f"predict_proba is for binary models; this one is {self.task.kind}")
        return self.output(frame)

    def predict(self, frame: "pd.DataFrame") -> "pd.DataFrame":
        """The task's answer per row: binary, ``probability`` and ``prediction`` (the positive class where the
        probability reaches the threshold); multiclass, ``prediction`` (a class), its ``probability`` and
        ``probability_<class>`` for each class; regression, ``prediction`` (a number)."""
        return answer_frame(self.task, self.output(frame), self.meta.get("threshold", 0.5), frame.index)


def answer_frame(task: Task, out: "np.ndarray", threshold: float, index: Any = None) -> "pd.DataFrame":
    """The rows Predictor.predict answers, from the task's raw output."""
    import pandas as pd

    return pd.DataFrame(answer_columns(task, out, threshold), index=index)


def answer_columns(task: Task, out: "np.ndarray", threshold: float) -> dict[str, "np.ndarray"]:
    """The answer's columns from the task's raw output (P(positive), [N, K] probabilities, or values), in order:
    what answer_frame holds, without building a frame (a model server answers one row in microseconds)."""
    import numpy as np

    if task.kind == "regression":
        return {"prediction": np.asarray(out, dtype="float64").reshape(-1)}
    classes = np.asarray(task.classes)
    if task.kind == "binary":
        return {"probability": out, "prediction": classes[(out >= threshold).astype("int64")]}
    best = out.argmax(axis=1)
    columns = {"prediction": classes[best], "probability": out[np.arange(len(out)), best]}
    for i, c in enumerate(task.classes):
        columns[f"probability_{c}"] = out[:, i]
    return columns


def save_model_folder(folder: Path, learner: Any, encoder: Encoder, meta: dict[str, Any]) -> None:
    """Write the learner's model file, the encoder and the meta file that Predictor.load reads."""
    folder.mkdir(parents=True, exist_ok=True)
    model_file = learner.save(folder)
    (folder / ENCODER_FILE).write_text(json.dumps(encoder.to_dict(), indent=2) + "\n")
    (folder / META_FILE).write_text(json.dumps({**meta, "model_file": model_file}, indent=2, default=str) + "\n")
