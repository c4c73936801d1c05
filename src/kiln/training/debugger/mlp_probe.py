"""The MLP's probe: one forward and backward pass in numpy over a fixed sample of training rows, from the
network's public weights (``coefs_``, ``intercepts_``), gives the training loss, each layer's gradient and which
ReLUs are dead; a forward pass over a sample of validation rows gives the validation loss.

scikit-learn exposes neither a layer's activations nor its gradients, hence the passes written here; they follow
its own: the output activation paired with its loss (logistic or softmax with log-loss, identity with half the
squared error), so the output's error term is ``output - target``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from threadpoolctl import ThreadpoolController

from kiln.training.debugger.observation import LayerStats, Observation
from kiln.training.debugger.probe import LAYERS, RELU, loss_name, sample_rows, task_loss
from kiln.training.family import Learner
from kiln.training.mlp import MlpLearner

if TYPE_CHECKING:
    import numpy as np

    from kiln.training.prepare import Prepared

Array = Any  # numpy arrays; numpy is imported where it is used


def _relu(z: Array) -> Array:
    import numpy as np

    return np.maximum(z, 0.0)


def _tanh(z: Array) -> Array:
    import numpy as np

    return np.tanh(z)


def _logistic(z: Array) -> Array:
    import numpy as np

    return 1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0)))  # beyond ±40 it is 0 or 1 in doubles


def _softmax(z: Array) -> Array:
    import numpy as np

    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# scikit-learn's hidden activations, and each one's derivative written in terms of its output
ACTIVATIONS: dict[str, tuple[Callable[[Array], Array], Callable[[Array], Array]]] = {
    "relu": (_relu, lambda a: a > 0),
    "tanh": (_tanh, lambda a: 1.0 - a * a),
    "logistic": (_logistic, lambda a: a * (1.0 - a)),
    "identity": (lambda z: z, lambda a: 1.0),
}
OUTPUTS: dict[str, Callable[[Array], Array]] = {"logistic": _logistic, "softmax": _softmax, "identity": lambda z: z}


class MlpProbe:
    """Losses on fixed samples of training and validation rows; per layer: mean |gradient|, and dead ReLUs."""

    def __init__(self, learner: MlpLearner, prep: "Prepared", rows: int) -> None:
        self.task, self.loss = prep.task, loss_name(prep.task)
        train = sample_rows(len(learner.y), rows)
        valid = sample_rows(len(prep.y["valid"]), rows)
        self.x_train, self.y_train = learner.x[train], learner.y[train]  # scaled targets, for regression
        self.x_valid = learner.scaled(prep.x["valid"][valid])
        y_valid = prep.y["valid"][valid]
        self.y_valid = y_valid if prep.task.is_classification else (y_valid - learner.y_mean) / learner.y_scale
        self.y_scale = learner.y_scale
        self.shows = frozenset({LAYERS, RELU} if learner.model.activation == "relu" else {LAYERS})
        self._blas: Any = None

    def _forward(self, model: Any, x: "np.ndarray") -> list["np.ndarray"]:
        hidden = ACTIVATIONS[model.activation][0]
        layers = [x]
        last = len(model.coefs_) - 1
        for i, (w, b) in enumerate(zip(model.coefs_, model.intercepts_)):
            z = layers[-1] @ w + b
            layers.append(OUTPUTS[model.out_activation_](z) if i == last else hidden(z))
        return layers

    def _loss(self, output: "np.ndarray", y: "np.ndarray") -> float:
        if self.task.kind == "regression":
            return task_loss(self.task, y, output[:, 0]) * self.y_scale  # RMSE in the label's own units
        return task_loss(self.task, y, output[:, 0] if self.task.kind == "binary" else output)

    def _target(self, y: "np.ndarray", width: int) -> "np.ndarray":
        import numpy as np

        if self.task.kind == "multiclass":
            return cast("np.ndarray", np.eye(width)[y.astype(int)])
        return np.asarray(y, dtype=float).reshape(-1, 1)

    def observe(self, learner: Learner, step: int, look: bool, valid_loss: float | None = None) -> Observation:
        import numpy as np

        assert isinstance(learner, MlpLearner)
        if self._blas is None:
            self._blas = ThreadpoolController()  # made here, where numpy's BLAS is loaded, and kept: a scan costs
        # one BLAS thread for these small products: waking the training's threads for 500 rows cost more CPU time
        # (about 10% of the MLP's training) than it saved
        with self._blas.limit(limits=1, user_api="blas"), np.errstate(all="ignore"):
            return self._observe(learner.model, step, look, valid_loss)  # a diverged network overflows: no warning

    def _observe(self, model: Any, step: int, look: bool, valid_loss: float | None) -> Observation:
        import numpy as np

        layers = self._forward(model, self.x_train)
        output = layers[-1]
        last = len(model.coefs_) - 1
        gradients = self._gradients(model, layers) if look else [None] * len(model.coefs_)
        relu = model.activation == "relu"
        stats = tuple(
            LayerStats(layer=i + 1, units=int(w.shape[1]), mean_abs_gradient=g,
                       dead_share=float(1.0 - np.any(layers[i + 1] > 0, axis=0).mean()) if relu and i < last else None)
            for i, (w, g) in enumerate(zip(model.coefs_, gradients)))
        if valid_loss is None:
            valid_loss = self._loss(self._forward(model, self.x_valid)[-1], self.y_valid)
        return Observation(step=step, train_loss=self._loss(output, self.y_train), valid_loss=valid_loss, layers=stats)

    def _gradients(self, model: Any, layers: list["np.ndarray"]) -> list[float | None]:
        """Each weight matrix's mean |d loss / d weight| over the training sample, by backpropagation."""
        import numpy as np

        # a true gradient, not the weights' change over a step: Adam scales its steps to about the learning rate
        # whatever the gradient's size, so that change would not show a gradient vanishing

        output = layers[-1]
        delta = (output - self._target(self.y_train, output.shape[1])) / len(output)
        derivative = ACTIVATIONS[model.activation][1]
        gradients: list[float | None] = []
        for i in range(len(model.coefs_) - 1, -1, -1):
            g = float(np.abs(layers[i].T @ delta).mean())
            gradients.append(g if math.isfinite(g) else None)  # a diverged network: no gradient to judge
            if i > 0:
                delta = (delta @ model.coefs_[i].T) * derivative(layers[i])
        gradients.reverse()
        return gradients
