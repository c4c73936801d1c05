"""An entry point's model as the compiler takes it: the XGBoost or LightGBM booster it holds, exported as Kiln's own
families are, and checked to answer what the file's predict() answers before anything is compiled."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.compile.parity import onnx_runtime_outputs
from kiln.data.task import Task
from kiln.errors import InputError
from kiln.training.entry import EntryRunner
from kiln.training.tree_onnx import lgbm_to_onnx
from kiln.training.xgb_onnx import xgb_to_onnx

if TYPE_CHECKING:
    import numpy as np
    import onnx

TOLERANCE = 1e-4  # the booster's own float32 sums against the graph's, relative to a value's size above 1
COMPILES = "XGBoost and LightGBM boosters (or their scikit-learn estimators)"


def entry_graph(folder: Path, meta: dict[str, Any], width: int,
                task: Task) -> tuple["onnx.ModelProto", Callable[["np.ndarray"], "np.ndarray"]]:
    """The booster inside an entry point's saved model as a standard-op ONNX graph, and the model's own answers
    (its file's predict()) for encoded rows, which the graph must match."""
    runner = EntryRunner(folder, meta)
    kind, booster = _booster(runner.model, str(meta.get("flavor")))
    graph = xgb_to_onnx(booster, width) if kind == "xgb" else lgbm_to_onnx(booster, width)
    return graph, lambda x: runner.output(x, task)


def _booster(model: Any, flavor: str) -> tuple[str, Any]:
    import lightgbm as lgb
    import xgboost as xgb

    if isinstance(model, xgb.Booster):
        return "xgb", model
    if isinstance(model, xgb.XGBModel):
        return "xgb", model.get_booster()
    if isinstance(model, lgb.Booster):
        return "lgbm", model
    if isinstance(model, lgb.LGBMModel):
        return "lgbm", model.booster_
    raise InputError(f"this entry point's model (a {type(model).__module__}.{type(model).__name__}, MLflow flavor "
                     f"{flavor}) has no exporter to standard ONNX operators; entry-point models that compile: "
                     f"{COMPILES}", hint="serve it with the mlflow runtime, which runs its own predict()")


def check_answers(graph: "onnx.ModelProto", answers: Callable[["np.ndarray"], "np.ndarray"], task: Task,
                  x: "np.ndarray", ref: str) -> float:
    """The graph's outputs against predict()'s on ``x``: the largest difference, or InputError naming the row."""
    import numpy as np

    want = answers(x)
    got = onnx_runtime_outputs(graph, x).astype(np.float64)
    if task.kind != "multiclass":
        got = got[:, 1] if task.kind == "binary" else got[:, 0]  # predict() answers P(positive) or the value: [N]
    if got.shape != want.shape:
        raise InputError(f"{ref}: the booster answers shape {list(got.shape)} and predict() {list(want.shape)} for "
                         f"{len(x)} rows; a compiled model answers what the booster predicts")
    diff = np.abs(got - want) / np.maximum(1.0, np.abs(want))
    worst = diff.reshape(len(x), -1).max(axis=1)
    row = int(worst.argmax()) if len(worst) else 0
    largest = float(worst.max()) if len(worst) else 0.0
    if not largest <= TOLERANCE:
        raise InputError(f"{ref}: its predict() answers {want[row].tolist()} on held-out row {row} where the booster "
                         f"inside answers {got[row].tolist()}; a compiled model can only answer what the booster "
                         "predicts", hint="compile a model whose predict() returns the booster's own prediction")
    return largest
