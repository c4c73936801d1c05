"""Model families: how each one learns step by step, what it may be tuned over, and how it is saved.

Every family learns in iterations (boosting rounds, epochs) so tuning can stop a poor trial early.
"""

from __future__ import annotations

import json
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from kiln.errors import InputError
from kiln.training.onnx_export import mlp_to_onnx

if TYPE_CHECKING:
    import numpy as np


class Learner(Protocol):
    def step(self) -> None: ...
    def predict_proba(self, x: "np.ndarray") -> "np.ndarray": ...
    def save(self, folder: Path) -> str: ...
    def state(self) -> bytes: ...
    def restore(self, state: bytes) -> None: ...


@dataclass(frozen=True)
class Param:
    """One tunable parameter: a range (log scale where it spans orders of magnitude) or a set of choices."""

    kind: str  # "float", "int" or "choice"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def check(self, name: str, value: Any) -> Any:
        if self.kind == "choice":
            if value not in self.choices:
                raise InputError(f"parameter '{name}': {value!r} is not one of {list(self.choices)}")
            return value
        try:
            number = int(value) if self.kind == "int" else float(value)
        except (TypeError, ValueError):
            raise InputError(f"parameter '{name}' must be {'an integer' if self.kind == 'int' else 'a number'}; "
                             f"got {value!r}") from None
        assert self.low is not None and self.high is not None  # a numeric Param is always built with its range
        if not self.low <= number <= self.high:
            raise InputError(f"parameter '{name}' = {number} lies outside [{self.low}, {self.high}]")
        return number


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    max_iterations: int  # a full training's length; tuning's per-trial ceiling
    unit: str  # what one iteration is
    params: dict[str, Param]
    defaults: dict[str, Any]
    start: Callable[[dict[str, Any], "np.ndarray", "np.ndarray", int], Learner]
    model_file: str
    exports_onnx: bool

    def config(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The defaults with ``overrides`` checked against the parameter ranges; unknown names are an error."""
        out = dict(self.defaults)
        for name, value in (overrides or {}).items():
            if name not in self.params:
                raise InputError(f"family {self.name} has no parameter '{name}'; it has: {', '.join(self.params)}")
            out[name] = self.params[name].check(name, value)
        return out


# --- LightGBM ------------------------------------------------------------------------------------------
LGBM_ROUNDS_PER_ITERATION = 10


class LgbmLearner:
    def __init__(self, config: dict[str, Any], x: "np.ndarray", y: "np.ndarray", seed: int) -> None:
        import lightgbm as lgb

        params = {
            "objective": "binary", "learning_rate": config["learning_rate"], "num_leaves": int(config["num_leaves"]),
            "min_data_in_leaf": int(config["min_child_samples"]), "feature_fraction": config["colsample"],
            "bagging_fraction": config["subsample"], "bagging_freq": 1, "lambda_l2": config["reg_lambda"],
            "seed": seed, "deterministic": True, "force_row_wise": True, "num_threads": 1, "verbose": -1,
        }
        self.params, self.dataset = params, lgb.Dataset(x, y, free_raw_data=False)
        self.booster = lgb.Booster(params, self.dataset)

    def step(self) -> None:
        self.booster.update()
        while self.booster.current_iteration() % LGBM_ROUNDS_PER_ITERATION:
            self.booster.update()

    def predict_proba(self, x: "np.ndarray") -> "np.ndarray":
        # Booster.predict is typed for every output kind; a binary objective on a dense matrix gives a 1-D array
        return cast("np.ndarray", self.booster.predict(x))

    def save(self, folder: Path) -> str:
        self.booster.save_model(str(folder / "model.lgbm.txt"))
        return "model.lgbm.txt"

    def state(self) -> bytes:
        return self.booster.model_to_string().encode()

    def restore(self, state: bytes) -> None:
        import lightgbm as lgb

        # LightGBM continues from the saved trees (their predictions become the initial score) and needs one
        # round to do so; step() then tops up to the next whole iteration. Bagging draws differ after a restore.
        self.booster = lgb.train(self.params, self.dataset, num_boost_round=1,
                                 init_model=lgb.Booster(model_str=state.decode()), keep_training_booster=True)


LGBM = Family(
    name="lgbm", description="gradient-boosted trees (LightGBM)", max_iterations=30,
    unit=f"{LGBM_ROUNDS_PER_ITERATION} boosting rounds",
    params={
        "learning_rate": Param("float", 0.005, 0.5, log=True), "num_leaves": Param("int", 4, 128, log=True),
        "min_child_samples": Param("int", 5, 100, log=True), "colsample": Param("float", 0.3, 1.0),
        "subsample": Param("float", 0.5, 1.0), "reg_lambda": Param("float", 1e-3, 10.0, log=True),
    },
    defaults={"learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 20, "colsample": 0.8,
              "subsample": 0.9, "reg_lambda": 1.0},
    start=LgbmLearner, model_file="model.lgbm.txt", exports_onnx=False,
)


# --- MLP -----------------------------------------------------------------------------------------------
class MlpLearner:
    """scikit-learn's MLP on standardized inputs, one epoch per step; exported to ONNX with standard ops."""

    def __init__(self, config: dict[str, Any], x: "np.ndarray", y: "np.ndarray", seed: int) -> None:
        import numpy as np
        from sklearn.neural_network import MLPClassifier

        self.mean = x.mean(axis=0)
        scale = x.std(axis=0)
        self.scale = np.where(scale > 1e-12, scale, 1.0)
        width, layers = int(config["width"]), int(config["layers"])
        self.model = MLPClassifier(
            hidden_layer_sizes=(width,) * layers, alpha=config["alpha"],
            learning_rate_init=config["learning_rate"], batch_size=int(config["batch_size"]), random_state=seed,
        )
        self.x, self.y = self._scaled(x), y

    def _scaled(self, x: "np.ndarray") -> "np.ndarray":
        return cast("np.ndarray", (x - self.mean) / self.scale)

    def step(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn's per-call convergence warning says nothing here
            self.model.partial_fit(self.x, self.y, classes=[0, 1])

    def predict_proba(self, x: "np.ndarray") -> "np.ndarray":
        return cast("np.ndarray", self.model.predict_proba(self._scaled(x))[:, 1])

    def state(self) -> bytes:
        return pickle.dumps(self.model)

    def restore(self, state: bytes) -> None:
        self.model = pickle.loads(state)  # a checkpoint this same process family wrote

    def save(self, folder: Path) -> str:
        model = mlp_to_onnx(self.model.coefs_, self.model.intercepts_, self.mean, self.scale)
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

FAMILIES: dict[str, Family] = {f.name: f for f in (LGBM, MLP)}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise InputError(f"unknown model family '{name}'; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def parse_params(items: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs; values are read as JSON where they parse (numbers), else kept as text."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InputError(f"--param '{item}': expected NAME=VALUE, e.g. learning_rate=0.05")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out
