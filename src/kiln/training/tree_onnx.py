"""A LightGBM model (binary, multiclass or regression) as an ONNX graph of standard operators only (Gather, MatMul,
Equal...).

onnxmltools emits ai.onnx.ml TreeEnsemble operators, which TVM cannot import; this follows Hummingbird's GEMM
strategy instead. Every tree is padded to the same M internal nodes and L leaves, so all T trees are evaluated
at once and the graph has the same few nodes (20 for binary) however many trees there are. For a batch of B rows of W features:

    x [B, W] -> |x| <= 1e-35 read as 0, or as missing (NaN) on a zero-as-missing feature, as LightGBM reads it
      -> Transpose, stacked on its negation: [2W, B] -> Gather each node's (signed) feature: v [T, M, B]
      -> hit = v <= bound [T, M, 1]: each node's test (bool [T, M, B])
      -> MatMul by the path matrix [T, L, M]: +1 where a leaf lies on its ancestor's hit side, -1 on the other
      -> Equal to each leaf's count of hit-side ancestors: the one leaf each row reaches in each tree [T, L, B]
      -> MatMul by the leaf values [T, 1, L] -> [B, T] -> MatMul by each tree's class [T, K] (+ a base margin)
      -> binary: Sigmoid -> [1 - p, p]; multiclass: Softmax -> [B, K]; regression: the value [B, 1]

LightGBM sends x left when x <= t (a double). For a float32 x that is x <= t32, t32 the largest float32 at or
below t: a node tests that, its hit side being left. A node whose missing values go left is tested mirrored
instead, -x <= -next_float32_above(t32), which holds when x goes right: a NaN fails every comparison, so it
lands on the non-hit side of every node, which is always the side its missing values take.

Exact but for one split LightGBM does not make: at +inf with missing values going left (everything goes left);
there x = +inf would go right. A finite threshold of 1e300 or more (possible only with float64 training data)
is read as infinite, as dump_model writes infinities so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kiln.errors import InputError
from kiln.training.onnx_export import INPUT, OUTPUT, VALUE_OUTPUT, probability_model

if TYPE_CHECKING:
    import lightgbm
    import numpy as np
    import onnx

ZERO_THRESHOLD = 1e-35  # LightGBM's kZeroThreshold: its predictor reads |x| <= this (a float32) as 0
INFINITE_THRESHOLD = 1e300  # how dump_model writes an infinite threshold

Leaf = tuple[float, list[tuple[int, bool]]]  # a leaf's value and its path: (node position, goes left)...


def threshold32(threshold: "np.ndarray") -> "np.ndarray":
    """The largest float32 at or below each double threshold: for a float32 x, ``x <= t`` iff ``x <= t32``."""
    import numpy as np

    threshold = np.asarray(threshold, dtype=np.float64)
    with np.errstate(over="ignore"):  # beyond float32's range: inf, then a step down to the largest float32
        out = threshold.astype(np.float32)
    up = out.astype(np.float64) > threshold
    out[up] = np.nextafter(out[up], np.float32(-np.inf))
    return out


def _flatten(index: int, root: dict[str, Any], names: list[str]) -> tuple[list[dict[str, Any]], list[Leaf]]:
    nodes: list[dict[str, Any]] = []
    leaves: list[Leaf] = []
    stack: list[tuple[dict[str, Any], list[tuple[int, bool]]]] = [(root, [])]
    while stack:
        node, path = stack.pop()
        if "split_index" not in node:
            if node.get("leaf_coeff"):
                raise InputError(f"tree {index} has linear leaves, which the ONNX export does not support",
                                 hint="train without linear_tree")
            leaves.append((float(node["leaf_value"]), path))
            continue
        feature = int(node["split_feature"])
        if node["decision_type"] != "<=":
            name = names[feature] if feature < len(names) else str(feature)
            kind = "categorical split" if node["decision_type"] == "==" else f"split '{node['decision_type']}'"
            raise InputError(f"{kind} in tree {index} on feature {feature} ({name}) is not supported",
                             hint="train LightGBM without categorical_feature; Kiln's encoder turns categories "
                                  "into numbers before training")
        position = len(nodes)
        nodes.append(node)
        stack.append((node["right_child"], [*path, (position, False)]))
        stack.append((node["left_child"], [*path, (position, True)]))
    return nodes, leaves


OBJECTIVES = ("binary", "multiclass", "regression")


def lgbm_to_onnx(booster: "lightgbm.Booster", width: int) -> "onnx.ModelProto":
    """The booster's answers for float32 rows of ``width`` features, as a standard-op ONNX graph: P(class 0),
    P(class 1) for binary, P(class k) for each class for multiclass, the value for regression.

    NaN and zero-as-missing inputs are routed as LightGBM routes them. Raises InputError for another objective,
    categorical splits, linear trees, or a ``width`` other than the booster's feature count.
    """
    import numpy as np

    dump = booster.dump_model()
    objective = str(dump.get("objective", ""))
    task = objective.split(" ")[0]
    classes = int(dump.get("num_tree_per_iteration", 1))
    if task not in OBJECTIVES or (task != "multiclass" and classes != 1):
        raise InputError(f"LightGBM models with objective '{objective}' do not export to ONNX; "
                         f"objectives that do: {', '.join(OBJECTIVES)}")
    if dump["max_feature_idx"] + 1 != width:
        raise InputError(f"the booster takes {dump['max_feature_idx'] + 1} features, not {width}")
    scale = 1.0  # the sigmoid's slope (LightGBM's `sigmoid` parameter), folded into the leaf values
    for token in objective.split()[1:]:
        if token.startswith("sigmoid:"):
            scale = float(token.partition(":")[2])
    names = dump.get("feature_names", [])
    trees = [_flatten(i, tree["tree_structure"], names) for i, tree in enumerate(dump["tree_info"])]
    if not trees:
        raise InputError("the booster has no trees")
    if dump.get("average_output"):  # random-forest mode averages its trees
        scale /= len(trees)

    # dump_model writes an infinite threshold (e.g. "all but the missing values go left") as +-1e300
    kinds: dict[int, set[str]] = {}  # each feature's missing types
    ensemble: list[tuple[list[Split], list[Leaf]]] = []
    for nodes, leaves in trees:
        splits = []
        for node in nodes:
            f, missing = int(node["split_feature"]), node["missing_type"]
            kinds.setdefault(f, set()).add(missing)
            # missing type None: LightGBM reads NaN as 0. NaN or Zero: a missing value takes the default side.
            missing_left = bool(node["default_left"]) if missing in ("NaN", "Zero") else node["threshold"] >= 0.0
            t = float(node["threshold"])
            t = t if abs(t) < INFINITE_THRESHOLD else float(np.copysign(np.inf, t))
            splits.append((f, float(threshold32(np.array([t]))[0]), missing_left))
        ensemble.append((splits, [(value * scale, steps) for value, steps in leaves]))
    zero_missing = sorted(f for f, seen in kinds.items() if "Zero" in seen)
    for f in zero_missing:
        if len(kinds[f]) > 1:
            raise InputError(f"feature {f} has splits with missing types {sorted(kinds[f])}; expected one")
    # read as 0, or as missing on a zero-as-missing feature
    tiny_value = np.zeros(width, dtype=np.float32)
    tiny_value[zero_missing] = np.nan
    return ensemble_graph(ensemble, width, task, classes, "kiln_lgbm", tiny_value=tiny_value)


Split = tuple[int, float, bool]  # a node: its feature, the float32 bound x <= bound of its left side, missing goes left


def ensemble_graph(trees: list[tuple[list[Split], list[Leaf]]], width: int, task: str, classes: int, name: str,
                   tiny_value: "np.ndarray | None" = None, offset: "float | np.ndarray" = 0.0) -> "onnx.ModelProto":
    """Trees as one standard-op graph: tree t's raw score counts towards class t % ``classes``; ``offset`` is added
    to the raw scores (a base margin, one or one per class), then the task's link (sigmoid, softmax or none). With ``tiny_value``,
    inputs with |x| <= ZERO_THRESHOLD are read as it (LightGBM's zero handling)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    t_count = len(trees)
    m = max(1, max(len(nodes) for nodes, _ in trees))  # padding nodes: feature 0, no leaf depends on them
    n_leaves = max(len(leaves) for _, leaves in trees)
    feature = np.zeros((t_count, m), dtype=np.int64)  # in [0, 2W): W + f reads -x_f
    bound = np.zeros((t_count, m), dtype=np.float32)
    mirrored = np.zeros((t_count, m), dtype=bool)
    path = np.zeros((t_count, n_leaves, m), dtype=np.float32)
    hits = np.full((t_count, n_leaves), -1.0, dtype=np.float32)  # a padding leaf scores 0: never reached
    values = np.zeros((t_count, n_leaves), dtype=np.float64)
    for t, (nodes, leaves) in enumerate(trees):
        for k, (f, b, missing_left) in enumerate(nodes):
            feature[t, k], bound[t, k], mirrored[t, k] = f + width * missing_left, b, missing_left
        for j, (value, steps) in enumerate(leaves):
            values[t, j] = value
            hits[t, j] = sum(left != mirrored[t, k] for k, left in steps)
            for k, left in steps:
                path[t, j, k] = 1.0 if left != mirrored[t, k] else -1.0
    bound[mirrored] = -np.nextafter(bound[mirrored], np.float32(np.inf))

    tree_class = np.zeros((t_count, classes), dtype=np.float32)  # one tree per class per boosting round
    tree_class[np.arange(t_count), np.arange(t_count) % classes] = 1.0
    inits = [
        numpy_helper.from_array(tree_class, "tree_class"),
        numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "tree_rows"),
        numpy_helper.from_array(np.asarray(offset, dtype=np.float32).reshape(-1), "offset"),  # [1] or [K]
        numpy_helper.from_array(feature, "node_feature"),
        numpy_helper.from_array(bound[:, :, None], "node_bound"),
        numpy_helper.from_array(path, "path"),
        numpy_helper.from_array(hits[:, :, None], "leaf_hits"),
        numpy_helper.from_array(values.astype(np.float32)[:, None, :], "leaf_value"),
    ]
    ops = []
    x = INPUT
    if tiny_value is not None:
        inits += [numpy_helper.from_array(np.array(ZERO_THRESHOLD, dtype=np.float32), "zero_threshold"),
                  numpy_helper.from_array(tiny_value, "tiny_value")]
        ops += [helper.make_node("Abs", [INPUT], ["magnitude"]),
                helper.make_node("LessOrEqual", ["magnitude", "zero_threshold"], ["tiny"]),
                helper.make_node("Where", ["tiny", "tiny_value", INPUT], ["x"])]
        x = "x"
    ops += [
        helper.make_node("Transpose", [x], ["x_t"], perm=[1, 0]),  # [W, B]
        helper.make_node("Neg", ["x_t"], ["x_neg"]),
        helper.make_node("Concat", ["x_t", "x_neg"], ["signed"], axis=0),  # [2W, B]
        helper.make_node("Gather", ["signed", "node_feature"], ["v"], axis=0),  # [T, M, B]
        helper.make_node("LessOrEqual", ["v", "node_bound"], ["hit"]),
        helper.make_node("Cast", ["hit"], ["hit_f"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["path", "hit_f"], ["score"]),  # [T, L, B]
        helper.make_node("Equal", ["score", "leaf_hits"], ["reached"]),
        helper.make_node("Cast", ["reached"], ["reached_f"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["leaf_value", "reached_f"], ["tree_out"]),  # [T, 1, B]
        helper.make_node("Reshape", ["tree_out", "tree_rows"], ["by_tree"]),  # [T, B]
        helper.make_node("Transpose", ["by_tree"], ["by_row"], perm=[1, 0]),  # [B, T]
        helper.make_node("MatMul", ["by_row", "tree_class"], ["summed"]),  # [B, K]
        helper.make_node("Add", ["summed", "offset"], ["raw"]),
    ]
    if task == "regression":
        ops.append(helper.make_node("Identity", ["raw"], [VALUE_OUTPUT]))
        return probability_model(ops, inits, width, name, classes=0)
    if task == "multiclass":
        ops.append(helper.make_node("Softmax", ["raw"], [OUTPUT], axis=1))
        return probability_model(ops, inits, width, name, classes=classes)
    inits.append(numpy_helper.from_array(np.array([1.0], dtype=np.float32), "one"))
    ops += [helper.make_node("Sigmoid", ["raw"], ["p1"]),
            helper.make_node("Sub", ["one", "p1"], ["p0"]),
            helper.make_node("Concat", ["p0", "p1"], [OUTPUT], axis=1)]
    return probability_model(ops, inits, width, name)
