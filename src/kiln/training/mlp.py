"""The MLP: scikit-learn's multilayer perceptron, one epoch an iteration, exported to ONNX."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from kiln.data.task import Task
from kiln.training.family import Family, Param
from kiln.training.onnx_export import mlp_to_onnx

if TYPE_CHECKING:
    import numpy as np

class MlpLearner:
    """scikit-learn's MLP on standardized inputs (and targets, for regression), one epoch per step; exported to ONNX
    with standard ops."""

    def __init__(self, config: dict[str, Any], x: "np.ndarray", y: "np.ndarray", seed: int, task: Task) -> None:
        import numpy as np
        from sklearn.neural_network import MLPClassifier, MLPRegressor

        self.task = task
        self.mean = x.mean(axis=0)
        scale = x.std(axis=0)
        self.scale = np.where(scale > 1e-12, scale, 1.0)
        width, layers = int(config["width"]), int(config["layers"])
        kind = MLPClassifier if task.is_classification else MLPRegressor
        self.model = kind(
            hidden_layer_sizes=(width,) * layers, alpha=config["alpha"],
            learning_rate_init=config["learning_rate"], batch_size=int(config["batch_size"]), random_state=seed,
        )
        self.y_mean, self.y_scale = 0.0, 1.0
        if not task.is_classification:  # a target in the hundreds would take the network many epochs to reach
            self.y_mean, self.y_scale = float(y.mean()), float(y.std()) or 1.0
        self.x, self.y = self.scaled(x), (y - self.y_mean) / self.y_scale if not task.is_classification else y

    def scaled(self, x: "np.ndarray") -> "np.ndarray":
        """Encoded rows as the network sees them: standardized with the training rows' mean and scale."""
        return cast("np.ndarray", (x - self.mean) / self.scale)

    def step(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn's per-call convergence warning says nothing here
            if self.task.is_classification:
                self.model.partial_fit(self.x, self.y, classes=list(range(len(self.task.classes))))
            else:
                self.model.partial_fit(self.x, self.y)

    def output(self, x: "np.ndarray") -> "np.ndarray":
        if self.task.kind == "regression":
            return cast("np.ndarray", self.model.predict(self.scaled(x)) * self.y_scale + self.y_mean)
        p = self.model.predict_proba(self.scaled(x))
        return cast("np.ndarray", p[:, 1] if self.task.kind == "binary" else p)

    def state(self) -> bytes:
        return pickle.dumps(self.model)

    def restore(self, state: bytes) -> None:
        self.model = pickle.loads(state)  # a checkpoint this same process family wrote

    def save(self, folder: Path) -> str:
        model = mlp_to_onnx(self.model.coefs_, self.model.intercepts_, self.mean, self.scale, self.task.kind,
                            self.y_mean, self.y_scale)
        (folder / "model.onnx").write_bytes(model.SerializeToString())
        return "model.onnx"


MLP = Family(
    name="mlp", description="multilayer perceptron (scikit-learn), exported to ONNX", max_iterations=40,
    unit="1 epoch",
    params={
        "width": Param("int", 8, 256, log=True), "layers": Param("int", 1, 3),
        "alpha": Param("float", 1e-6, 1e-1, log=True), "learning_rate": Param("float", 1e-4, 3e-2, log=True),
        "batch_size": Param("choice", choices=(32, 64, 128, 256)),
    },
    defaults={"width": 64, "layers": 2, "alpha": 1e-4, "learning_rate": 1e-3, "batch_size": 64},
    start=MlpLearner, model_file="model.onnx", exports_onnx=True,
)
