"""An XGBoost model (binary:logistic, multi:softprob, reg:squarederror) as an ONNX graph of standard operators.

The same GEMM graph as LightGBM's (tree_onnx.ensemble_graph). XGBoost sends x left when x < t (float32 t), so a
node's "x <= bound" is bound = the float32 just below t; a node whose missing values go left is tested mirrored,
as there. XGBoost's base score (its intercept) is the graph's offset, in margin space.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from kiln.errors import InputError
from kiln.training.tree_onnx import Leaf, Split, ensemble_graph

if TYPE_CHECKING:
    import onnx
    import xgboost

TASKS = {"binary:logistic": "binary", "multi:softprob": "multiclass", "reg:squarederror": "regression"}


def xgb_to_onnx(booster: "xgboost.Booster", width: int) -> "onnx.ModelProto":
    """The booster's answers for float32 rows of ``width`` features, as load_model's predict gives them."""
    import numpy as np

    config = json.loads(booster.save_config())
    learner = config["learner"]
    objective = learner["objective"]["name"]
    if objective not in TASKS:
        raise InputError(f"XGBoost models with objective '{objective}' do not export to ONNX; objectives that do: "
                         f"{', '.join(TASKS)}")
    params = learner["learner_model_param"]
    if int(params["num_feature"]) != width:
        raise InputError(f"the booster takes {params['num_feature']} features, not {width}")
    task = TASKS[objective]
    classes = max(1, int(params.get("num_class", "0")))
    base = np.atleast_1d(np.asarray(json.loads(params["base_score"].replace("E", "e")), dtype=np.float64))
    if task == "binary":
        base = np.log(base / (1.0 - base))  # base_score is a probability; the trees add to its log-odds
    trees = [_tree(i, json.loads(text)) for i, text in enumerate(booster.get_dump(dump_format="json"))]
    if not trees:
        raise InputError("the booster has no trees")
    offset = base if len(base) == classes else np.full(classes, float(base[0]))
    return ensemble_graph(trees, width, task, classes, "kiln_xgb", offset=offset)


def _tree(index: int, root: dict[str, Any]) -> tuple[list[Split], list[Leaf]]:
    import numpy as np

    splits: list[Split] = []
    leaves: list[Leaf] = []
    stack: list[tuple[dict[str, Any], list[tuple[int, bool]]]] = [(root, [])]
    while stack:
        node, path = stack.pop()
        if "leaf" in node:
            leaves.append((float(node["leaf"]), path))
            continue
        if "split_condition" not in node or not str(node["split"]).startswith("f"):
            raise InputError(f"tree {index}: node {node.get('nodeid')} is not a numeric split, which the ONNX export "
                             "does not support", hint="train without categorical features")
        children = {child["nodeid"]: child for child in node["children"]}
        t = np.float32(node["split_condition"])
        bound = float(np.nextafter(t, np.float32(-math.inf)))  # x < t  <=>  x <= the float32 below t
        position = len(splits)
        splits.append((int(str(node["split"])[1:]), bound, node["missing"] == node["yes"]))
        stack.append((children[node["no"]], [*path, (position, False)]))
        stack.append((children[node["yes"]], [*path, (position, True)]))
    return splits, leaves

