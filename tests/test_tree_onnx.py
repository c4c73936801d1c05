"""LightGBM and XGBoost as standard-op ONNX graphs: the same answers as the boosters (binary, multiclass,
regression), in ONNX Runtime and in TVM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from kiln.data.task import BINARY_01
from kiln.errors import InputError
from kiln.training.tree_onnx import lgbm_to_onnx, threshold32

WIDTH = 30
TOLERANCE = 1e-5


def make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian features, one with many ties (steps of 0.5), one integer-valued (0..9)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, WIDTH)).astype(np.float32)
    x[:, 3] = np.round(x[:, 3] * 2) / 2
    x[:, 4] = rng.integers(0, 10, n)
    logit = x[:, 0] + x[:, 3] * x[:, 4] / 4 + np.sin(2 * x[:, 1]) - x[:, 2] ** 2 / 2 + 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * logit))).astype(np.int64)
    return x, y


def train(tmp_path: Path, x: np.ndarray, y: np.ndarray, rounds: int, **params: Any) -> lgb.Booster:
    """Trained as Kiln trains, saved to model.lgbm.txt and read back as Kiln's predictor reads it."""
    params = {"objective": "binary", "num_leaves": 15, "seed": 7, "deterministic": True, "num_threads": 1,
              "force_row_wise": True, "verbose": -1, **params}
    booster = lgb.train(params, lgb.Dataset(x, y), num_boost_round=rounds)
    booster.save_model(str(tmp_path / "model.lgbm.txt"))
    return lgb.Booster(model_file=str(tmp_path / "model.lgbm.txt"))


def session(tmp_path: Path, model: onnx.ModelProto) -> ort.InferenceSession:
    (tmp_path / "model.onnx").write_bytes(model.SerializeToString())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(tmp_path / "model.onnx"), options, providers=["CPUExecutionProvider"])


def ort_proba(sess: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    out = sess.run(None, {"features": np.ascontiguousarray(x, dtype=np.float32)})[0]
    assert out.shape == (len(x), 2) and np.allclose(out.sum(axis=1), 1.0, atol=1e-6)
    return out[:, 1]


def assert_close(got: np.ndarray, want: Any, what: str) -> None:
    diff = np.abs(got.astype(np.float64) - np.asarray(want))
    assert np.all(diff <= TOLERANCE), f"{what}: max |diff| {np.nanmax(diff):.3g} over {len(diff)} rows"


Split = tuple[int, dict[str, Any], set[int], list[tuple[dict[str, Any], bool]]]


def splits(booster: lgb.Booster) -> list[Split]:
    """Every split as (tree, node, the leaf indices beneath it, its ancestors and the side taken at each)."""
    out: list[Split] = []

    def walk(tree: int, node: dict[str, Any], path: list[tuple[dict[str, Any], bool]]) -> set[int]:
        if "split_index" not in node:
            return {node.get("leaf_index", 0)}
        beneath: set[int] = set()
        out.append((tree, node, beneath, path))
        beneath.update(walk(tree, node["left_child"], [*path, (node, True)]),
                       walk(tree, node["right_child"], [*path, (node, False)]))
        return beneath

    for info in booster.dump_model()["tree_info"]:
        walk(info["tree_index"], info["tree_structure"], [])
    return out


def read(v: np.float32) -> float:
    """The value LightGBM's predictor sees: |x| <= 1e-35 is read as 0."""
    return 0.0 if abs(v) <= np.float32(1e-35) else float(v)


def left_edge(threshold: float) -> np.float32:
    """The largest float32 that goes left (x <= threshold)."""
    v = threshold32(np.array([threshold]))[0]
    while read(v) > threshold:  # -1e-35 reads as 0 and goes right of a -1e-35 threshold
        v = np.nextafter(v, np.float32(-np.inf))
    return v


def right_edge(threshold: float) -> np.float32:
    """The smallest float32 that goes right."""
    v = np.nextafter(threshold32(np.array([threshold]))[0], np.float32(np.inf))
    while read(v) <= threshold:
        v = np.nextafter(v, np.float32(np.inf))
    return v


def boundary_rows(booster: lgb.Booster, base: np.ndarray) -> tuple[np.ndarray, float]:
    """Per split, rows led down to it that hold its feature at the largest float32 going left and the smallest
    going right (and at the float32 threshold itself where that reads as 0 and so goes right); with the share of
    the first two kinds that do reach their split."""
    rows, targets, extra = [], [], []
    for i, (tree, node, beneath, path) in enumerate(splits(booster)):
        bounds: dict[int, list[float]] = {}  # feature -> [low, high]: x in (low, high] follows the path
        for ancestor, left in path:
            low_high = bounds.setdefault(ancestor["split_feature"], [-np.inf, np.inf])
            if left:
                low_high[1] = min(low_high[1], ancestor["threshold"])
            else:
                low_high[0] = max(low_high[0], ancestor["threshold"])
        row = base[i % len(base)].copy()
        for feature, (low, high) in bounds.items():
            row[feature] = left_edge(high) if np.isfinite(high) else right_edge(low)
        t, f = node["threshold"], node["split_feature"]
        for value in (left_edge(t), right_edge(t)):
            rows.append(row.copy())
            rows[-1][f] = value
            targets.append((tree, beneath))
        at = threshold32(np.array([t]))[0]
        if at != left_edge(t):
            extra.append(row.copy())
            extra[-1][f] = at
    x = np.array(rows, dtype=np.float32)
    leaves = np.asarray(booster.predict(x, pred_leaf=True))
    reached = np.mean([leaves[r, tree] in beneath for r, (tree, beneath) in enumerate(targets)])
    return np.concatenate([x, np.array(extra, dtype=np.float32).reshape(-1, x.shape[1])]), float(reached)


@pytest.mark.parametrize("num_leaves, rounds", [(15, 200), (63, 40)])
def test_matches_lightgbm_to_the_float32_boundary(tmp_path: Path, num_leaves: int, rounds: int) -> None:
    x, y = make_data(3000, seed=1)
    booster = train(tmp_path, x[:2000], y[:2000], rounds, num_leaves=num_leaves)
    model = lgbm_to_onnx(booster, WIDTH)
    sess = session(tmp_path, model)

    held_out = x[2000:]
    assert_close(ort_proba(sess, held_out), booster.predict(held_out), "held-out rows")

    thresholds = np.array([node["threshold"] for _, node, _, _ in splits(booster)])
    assert (thresholds.astype(np.float32) > thresholds).any(), "no threshold rounds up to float32: a weak test"
    planted, reached = boundary_rows(booster, held_out)
    assert reached > 0.99, f"only {reached:.0%} of the boundary rows reach their split"
    assert_close(ort_proba(sess, planted), booster.predict(planted), f"{len(planted)} boundary rows")

    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}
    assert [o.domain for o in model.opset_import] == [""]
    assert len(model.graph.node) == 20  # however many trees


def test_threshold32_is_the_largest_float32_at_or_below() -> None:
    t = np.array([0.1, 1 / 3, 2.0, 2.0000000000000004, -0.1, 1e300, -1e300, 3.4028235677973366e38, 0.0])
    t32 = threshold32(t)
    assert t32.dtype == np.float32
    assert np.all(t32.astype(np.float64) <= t)
    with np.errstate(over="ignore"):
        assert np.all(np.nextafter(t32, np.float32(np.inf)).astype(np.float64) > t)
    assert t32[2] == 2.0 and t32[3] == 2.0 and t32[0] < np.float32(0.1)


def missing_rows(x: np.ndarray, seed: int) -> np.ndarray:
    """Rows with NaN, exact zeros, values LightGBM reads as zero (|x| <= 1e-35) and infinities."""
    rng = np.random.default_rng(seed)
    x = x.copy()
    for value, share in [(np.nan, 0.15), (0.0, 0.1), (-0.0, 0.02), (1e-36, 0.02), (-1e-40, 0.02),
                         (2e-35, 0.02), (np.inf, 0.01), (-np.inf, 0.01)]:
        x[rng.random(x.shape) < share] = value
    return x


@pytest.mark.parametrize("variant", ["nan_in_training", "zero_as_missing", "no_missing_in_training",
                                     "random_forest", "sigmoid_0.5"])
def test_matches_lightgbm_on_missing_values_and_variants(tmp_path: Path, variant: str) -> None:
    x, y = make_data(2600, seed=2)
    train_x = x[:2000].copy()
    params: dict[str, Any] = {}
    if variant in ("nan_in_training", "zero_as_missing"):
        train_x = missing_rows(train_x, seed=3)
    if variant == "zero_as_missing":
        params["zero_as_missing"] = True
    if variant == "random_forest":
        params.update(boosting="rf", bagging_fraction=0.7, bagging_freq=1)
    if variant == "sigmoid_0.5":
        params["sigmoid"] = 0.5
    booster = train(tmp_path, train_x, y[:2000], 60, **params)
    kinds = {node["missing_type"] for _, node, _, _ in splits(booster)}
    expected = {"nan_in_training": "NaN", "zero_as_missing": "Zero"}.get(variant, "None")
    assert expected in kinds, f"no split with missing type {expected}: {kinds}"

    sess = session(tmp_path, lgbm_to_onnx(booster, WIDTH))
    rows = np.concatenate([x[2000:], missing_rows(x[2000:], seed=4)])
    assert_close(ort_proba(sess, rows), booster.predict(rows), variant)


@pytest.mark.parametrize("zero_as_missing", [False, True])
def test_runs_in_tvm_as_in_onnx_runtime(tmp_path: Path, zero_as_missing: bool) -> None:
    import tvm
    import tvm.relax.frontend.onnx  # registers relax.frontend.onnx
    from tvm import relax

    x, y = make_data(2256, seed=5)
    train_x = missing_rows(x[:2000], seed=7) if zero_as_missing else x[:2000]
    booster = train(tmp_path, train_x, y[:2000], 50, zero_as_missing=zero_as_missing)
    model = lgbm_to_onnx(booster, WIDTH)
    rows = np.concatenate([x[2000:2128], missing_rows(x[2128:], seed=6)])
    want = session(tmp_path, model).run(None, {"features": rows})[0]

    mod = relax.frontend.onnx.from_onnx(model, keep_params_in_input=False)  # the batch stays dynamic
    exe = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(exe, tvm.cpu())
    for batch in (rows, rows[:1]):
        out = vm["main"](tvm.runtime.tensor(batch))
        got = (out if hasattr(out, "numpy") else out[0]).numpy()
        assert got.shape == (len(batch), 2)
        diff = np.abs(got - want[:len(batch)])
        assert diff.max() <= TOLERANCE, f"TVM vs ORT at batch {len(batch)}: max |diff| {diff.max():.3g}"
        assert_close(got[:, 1], booster.predict(batch), f"TVM vs LightGBM at batch {len(batch)}")


def test_kiln_lgbm_learner_after_a_restore(tmp_path: Path) -> None:
    """The family's own learner (feature and row sampling), checkpointed and restored, then saved."""
    from kiln.training.families import get_family

    family = get_family("lgbm")
    x, y = make_data(1500, seed=14)
    learner = family.start(family.config(), x[:1000], y[:1000], 3, BINARY_01)
    learner.step()
    learner.restore(learner.state())
    learner.step()
    booster = lgb.Booster(model_file=str(tmp_path / learner.save(tmp_path)))
    assert booster.num_trees() == 20
    rows = np.concatenate([x[1000:], missing_rows(x[1000:], seed=15)])
    assert_close(ort_proba(session(tmp_path, lgbm_to_onnx(booster, WIDTH)), rows), booster.predict(rows),
                 "Kiln's learner")


def test_single_leaf_booster(tmp_path: Path) -> None:
    x, y = make_data(300, seed=8)
    booster = train(tmp_path, x, y, 5, min_data_in_leaf=1000)
    assert all("split_index" not in t["tree_structure"] for t in booster.dump_model()["tree_info"])
    rows = missing_rows(x[:50], seed=9)
    assert_close(ort_proba(session(tmp_path, lgbm_to_onnx(booster, WIDTH)), rows), booster.predict(rows),
                 "single leaf")


def test_categorical_split_is_refused(tmp_path: Path) -> None:
    x, _ = make_data(1000, seed=10)
    x[:, 6] = np.random.default_rng(11).integers(0, 6, len(x))
    y = np.isin(x[:, 6], [1, 4]).astype(np.int64)
    params = {"objective": "binary", "verbose": -1, "num_threads": 1, "min_data_per_group": 5}
    booster = lgb.train(params, lgb.Dataset(x, y, categorical_feature=[6]), num_boost_round=3)
    with pytest.raises(InputError, match=r"categorical split in tree 0 on feature 6 \(Column_6\) is not supported"):
        lgbm_to_onnx(booster, WIDTH)


def test_other_objectives_are_refused() -> None:
    x, y = make_data(300, seed=12)
    booster = lgb.train({"objective": "cross_entropy", "verbose": -1, "num_threads": 1}, lgb.Dataset(x, y),
                        num_boost_round=2)
    with pytest.raises(InputError, match="objective 'cross_entropy' do not export"):
        lgbm_to_onnx(booster, WIDTH)


def _task_data(task: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """make_data's features with missing values, and a label for ``task`` from the same signal."""
    x, y = make_data(n, seed)
    x[np.random.default_rng(seed).random(x.shape) < 0.05] = np.nan
    signal = np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 3]) * np.nan_to_num(x[:, 4]) / 4
    if task == "multiclass":
        return x, np.digitize(signal, [-0.5, 0.5, 1.5])  # four classes
    return (x, 50 + 10 * signal) if task == "regression" else (x, y)


def _answers(sess: ort.InferenceSession, x: np.ndarray, task: str) -> np.ndarray:
    out = sess.run(None, {"features": np.ascontiguousarray(x, dtype=np.float32)})[0]
    if task == "regression":
        assert out.shape == (len(x), 1)
        return out[:, 0]
    assert np.allclose(out.sum(axis=1), 1.0, atol=1e-6)
    return out[:, 1] if task == "binary" else out


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_lightgbm_multiclass_and_regression_match_the_booster(tmp_path: Path, task: str) -> None:
    x, y = _task_data(task, 3000, seed=21)
    params = {"objective": task, **({"num_class": 4} if task == "multiclass" else {})}
    booster = train(tmp_path, x, y, 30, **params)
    sess = session(tmp_path, lgbm_to_onnx(booster, WIDTH))
    probe, reached = boundary_rows(booster, x[:64])
    assert reached > 0.9
    for rows, what in ((x, "training rows"), (probe, "rows on every split's float32 edges")):
        got, want = _answers(sess, rows, task), booster.predict(rows)
        scale = 1.0 if task != "regression" else float(np.abs(want).max())  # float32 sums: relative for values
        assert np.abs(got - want).max() <= TOLERANCE * scale, what


def _xgb_edges(booster: Any, base: np.ndarray) -> np.ndarray:
    """Rows holding each split's feature at its float32 threshold and at the float32 just below it."""
    import json

    rows = []
    for text in booster.get_dump(dump_format="json"):
        stack = [json.loads(text)]
        while stack:
            node = stack.pop()
            if "leaf" in node:
                continue
            t = np.float32(node["split_condition"])
            for value in (t, np.nextafter(t, np.float32(-np.inf))):
                row = base[len(rows) % len(base)].copy()
                row[int(node["split"][1:])] = value
                rows.append(row)
            stack.extend(node["children"])
    return np.array(rows, dtype=np.float32)


@pytest.mark.parametrize("task, objective", [("binary", "binary:logistic"), ("multiclass", "multi:softprob"),
                                             ("regression", "reg:squarederror")])
def test_xgboost_matches_the_booster(tmp_path: Path, task: str, objective: str) -> None:
    import xgboost as xgb

    from kiln.training.xgb_onnx import xgb_to_onnx

    x, y = _task_data(task, 3000, seed=22)
    params = {"objective": objective, "max_depth": 5, "eta": 0.3, "nthread": 1, "seed": 7,
              **({"num_class": 4} if task == "multiclass" else {})}
    trained = xgb.train(params, xgb.DMatrix(x, label=y), 30)
    trained.save_model(str(tmp_path / "model.xgb.json"))
    booster = xgb.Booster(model_file=str(tmp_path / "model.xgb.json"))  # as Kiln's predictor reads it
    graph = xgb_to_onnx(booster, WIDTH)
    assert {n.domain for n in graph.graph.node} == {""}
    sess = session(tmp_path, graph)
    for rows, what in ((x, "training rows"), (_xgb_edges(booster, x[:64]), "rows on every split's float32 edge")):
        got, want = _answers(sess, rows, task), booster.inplace_predict(rows)
        scale = 1.0 if task != "regression" else float(np.abs(want).max())
        assert np.abs(got - want).max() <= TOLERANCE * scale, what


def test_width_must_match(tmp_path: Path) -> None:
    x, y = make_data(300, seed=13)
    with pytest.raises(InputError, match="takes 30 features, not 29"):
        lgbm_to_onnx(train(tmp_path, x, y, 2), WIDTH - 1)
