"""A saved model folder (encoder + model file + meta) that turns feature rows into churn probabilities."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from kiln.training.encoding import Encoder

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

META_FILE = "kiln-model.json"
ENCODER_FILE = "encoder.json"


@dataclass
class Predictor:
    meta: dict[str, Any]  # family, config, threshold, features, label, model_file
    encoder: Encoder
    runner: Any  # a LightGBM Booster or an ONNX Runtime session

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
        else:
            import lightgbm as lgb

            runner = lgb.Booster(model_file=str(path))
        return cls(meta=meta, encoder=encoder, runner=runner)

    def proba_matrix(self, x: "np.ndarray") -> "np.ndarray":
        """P(positive class) for an already-encoded matrix."""
        if hasattr(self.runner, "run"):
            import numpy as np

            x = np.ascontiguousarray(x, dtype=np.float32)  # the ONNX graph takes float32 only
            return cast("np.ndarray", self.runner.run(None, {self.runner.get_inputs()[0].name: x})[0][:, 1])
        return cast("np.ndarray", self.runner.predict(x))

    def predict_proba(self, frame: "pd.DataFrame") -> "np.ndarray":
        return self.proba_matrix(self.encoder.transform(frame))

    def predict(self, frame: "pd.DataFrame") -> "pd.DataFrame":
        """A frame with `probability` and `prediction` (1 where the probability reaches the threshold)."""
        import pandas as pd

        p = self.predict_proba(frame)
        return pd.DataFrame({"probability": p, "prediction": (p >= self.meta["threshold"]).astype("int64")},
                            index=frame.index)


def save_model_folder(folder: Path, learner: Any, encoder: Encoder, meta: dict[str, Any]) -> None:
    """Write the learner's model file, the encoder and the meta file that Predictor.load reads."""
    folder.mkdir(parents=True, exist_ok=True)
    model_file = learner.save(folder)
    (folder / ENCODER_FILE).write_text(json.dumps(encoder.to_dict(), indent=2) + "\n")
    (folder / META_FILE).write_text(json.dumps({**meta, "model_file": model_file}, indent=2, default=str) + "\n")
