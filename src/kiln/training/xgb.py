"""XGBoost: gradient-boosted trees (SageMaker's most used built-in algorithm), ten boosting rounds an iteration."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from kiln.data.task import Task
from kiln.training.family import Family, Param

if TYPE_CHECKING:
    import numpy as np

XGB_ROUNDS_PER_ITERATION = 10
MODEL_FILE = "model.xgb.json"


def xgb_objective(task: Task) -> dict[str, Any]:
    """XGBoost's objective for the task, answering probabilities for classes (softprob, not class indexes)."""
    if task.kind == "multiclass":
        return {"objective": "multi:softprob", "num_class": len(task.classes), "eval_metric": "mlogloss"}
    if task.kind == "binary":
        return {"objective": "binary:logistic", "eval_metric": "logloss"}
    return {"objective": "reg:squarederror", "eval_metric": "rmse"}


def xgb_params(config: dict[str, Any], seed: int, task: Task) -> dict[str, Any]:
    """XGBoost's parameters for a family config (one thread: trials and workers each take one core)."""
    return {
        **xgb_objective(task), "eta": config["learning_rate"], "max_depth": int(config["max_depth"]),
        "min_child_weight": config["min_child_weight"], "subsample": config["subsample"],
        "colsample_bytree": config["colsample"], "lambda": config["reg_lambda"], "tree_method": "hist",
        "seed": seed, "nthread": 1, "verbosity": 0,
    }


class XgbModel:
    """A trained booster, however it was trained (step by step here, or by workers of a distributed job)."""

    def __init__(self, booster: Any) -> None:
        self.booster = booster

    def output(self, x: "np.ndarray") -> "np.ndarray":
        # inplace_predict is typed for every input kind; a dense matrix gives [N] or, multiclass, [N, K]
        return cast("np.ndarray", self.booster.inplace_predict(x))

    def save(self, folder: Path) -> str:
        self.booster.save_model(str(folder / MODEL_FILE))
        return MODEL_FILE

    def rounds(self) -> int:
        """Boosting rounds trained."""
        return int(self.booster.num_boosted_rounds())


class XgbLearner(XgbModel):
    def __init__(self, config: dict[str, Any], x: "np.ndarray", y: "np.ndarray", seed: int, task: Task) -> None:
        import xgboost as xgb

        self.params = xgb_params(config, seed, task)
        self.train = xgb.DMatrix(x, label=y)
        super().__init__(xgb.Booster(self.params, [self.train]))

    def step(self) -> None:
        done = self.booster.num_boosted_rounds()
        for i in range(done, done + XGB_ROUNDS_PER_ITERATION):
            self.booster.update(self.train, i)

    def state(self) -> bytes:
        return bytes(self.booster.save_raw(raw_format="ubj"))

    def restore(self, state: bytes) -> None:
        import xgboost as xgb

        self.booster = xgb.Booster(self.params, [self.train], model_file=bytearray(state))


XGB = Family(
    name="xgb", description="gradient-boosted trees (XGBoost)", max_iterations=30,
    unit=f"{XGB_ROUNDS_PER_ITERATION} boosting rounds",
    params={
        "learning_rate": Param("float", 0.005, 0.5, log=True), "max_depth": Param("int", 2, 10),
        "min_child_weight": Param("float", 0.1, 20.0, log=True), "colsample": Param("float", 0.3, 1.0),
        "subsample": Param("float", 0.5, 1.0), "reg_lambda": Param("float", 1e-3, 10.0, log=True),
    },
    defaults={"learning_rate": 0.1, "max_depth": 4, "min_child_weight": 1.0, "colsample": 0.8, "subsample": 0.9,
              "reg_lambda": 1.0},
    start=XgbLearner, model_file=MODEL_FILE, exports_onnx=False,
)
