"""LightGBM: gradient-boosted trees, ten boosting rounds an iteration."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from kiln.data.task import Task
from kiln.training.family import Family, Param

if TYPE_CHECKING:
    import numpy as np

LGBM_ROUNDS_PER_ITERATION = 10
MODEL_FILE = "model.lgbm.txt"


def lgbm_objective(task: Task) -> dict[str, Any]:
    """LightGBM's objective for the task (its own names), with the number of classes where it needs one."""
    if task.kind == "multiclass":
        return {"objective": "multiclass", "num_class": len(task.classes)}
    return {"objective": task.kind}  # "binary" and "regression" are LightGBM's names too


def lgbm_params(config: dict[str, Any], seed: int, task: Task) -> dict[str, Any]:
    """LightGBM's parameters for a family config (one thread: trials and workers each take one core)."""
    return {
        **lgbm_objective(task), "learning_rate": config["learning_rate"], "num_leaves": int(config["num_leaves"]),
        "min_data_in_leaf": int(config["min_child_samples"]), "feature_fraction": config["colsample"],
        "bagging_fraction": config["subsample"], "bagging_freq": 1, "lambda_l2": config["reg_lambda"],
        "seed": seed, "deterministic": True, "force_row_wise": True, "num_threads": 1, "verbose": -1,
    }


class LgbmModel:
    """A trained booster, however it was trained (step by step here, or by workers of a distributed job)."""

    def __init__(self, booster: Any) -> None:
        self.booster = booster

    def output(self, x: "np.ndarray") -> "np.ndarray":
        # Booster.predict is typed for every output kind; on a dense matrix it gives [N] or, multiclass, [N, K]. One
        # thread, as in training: without it LightGBM sets the process's OpenMP threads to every core, and the
        # training steps after it contend with the other trials
        return cast("np.ndarray", self.booster.predict(x, num_threads=1))

    def save(self, folder: Path) -> str:
        self.booster.save_model(str(folder / MODEL_FILE))
        return MODEL_FILE

    def rounds(self) -> int:
        """Boosting rounds trained."""
        return int(self.booster.current_iteration())


class LgbmLearner(LgbmModel):
    def __init__(self, config: dict[str, Any], x: "np.ndarray", y: "np.ndarray", seed: int, task: Task) -> None:
        import lightgbm as lgb

        self.params, self.dataset = lgbm_params(config, seed, task), lgb.Dataset(x, y, free_raw_data=False)
        super().__init__(lgb.Booster(self.params, self.dataset))

    def step(self) -> None:
        target = (self.booster.current_iteration() // LGBM_ROUNDS_PER_ITERATION + 1) * LGBM_ROUNDS_PER_ITERATION
        for _ in range(LGBM_ROUNDS_PER_ITERATION):
            # update() is True once no split helps; the round count then stops growing, so waiting for it would spin
            if self.booster.current_iteration() >= target or self.booster.update():
                break

    def state(self) -> bytes:
        return str(self.booster.model_to_string()).encode()

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
    start=LgbmLearner, model_file=MODEL_FILE, exports_onnx=False,
)
