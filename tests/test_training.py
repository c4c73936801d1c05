"""Training without a tracking server in the way: data checks, splits, encodings, the MLP's ONNX, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kiln.errors import InputError
from kiln.training.data import load_training_set
from kiln.training.encoding import Encoder
from kiln.training.families import get_family
from kiln.training.family import parse_params
from kiln.training.metrics import classification_metrics, expected_calibration_error
from kiln.training.prepare import fit, prepare
from kiln.training.split import split
from kiln.tuning.space import narrowed, parse_ranges


def write_set(path: Path, frame: pd.DataFrame, features: list[str], label: str = "churned") -> Path:
    frame.to_parquet(path, index=False)
    meta = {"features": features, "label": label, "task": {"kind": "binary", "classes": [0, 1]},
            "lineage": {"feature_service": "t_v1", "dataset": "t"}}
    path.with_name(path.name + ".json").write_text(json.dumps(meta))
    return path


def synthetic(n: int = 600, seed: int = 0, times: bool = True) -> pd.DataFrame:
    """A learnable problem: churn rises with calls and falls with tenure; one text column, some nulls."""
    rng = np.random.default_rng(seed)
    calls = rng.poisson(2, n).astype("int64")
    tenure = rng.uniform(0, 1000, n)
    plan = rng.choice(["basic", "plus", "pro"], n)
    logit = 0.9 * calls - tenure / 300 + (plan == "basic") * 0.8 - 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")
    tenure[rng.random(n) < 0.05] = np.nan  # an expired feature arrives as a null
    start = pd.Timestamp("2026-01-01", tz="UTC")
    stamps = [start + pd.Timedelta(days=int(d)) for d in rng.integers(0, 90, n)] if times else [start] * n
    return pd.DataFrame({"customer_id": np.arange(n), "label_timestamp": stamps, "calls": calls,
                         "tenure": tenure, "plan": plan, "churned": y})


FEATURES = ["calls", "tenure", "plan"]


@pytest.fixture
def training_set(tmp_path: Path) -> Path:
    return write_set(tmp_path / "ts.parquet", synthetic(), FEATURES)


def test_split_is_by_time_when_label_times_vary(training_set: Path) -> None:
    data = load_training_set(training_set)
    parts = split(data, seed=1)
    assert parts.method == "time"
    assert parts.train["label_timestamp"].max() <= parts.valid["label_timestamp"].min()
    assert parts.valid["label_timestamp"].max() <= parts.test["label_timestamp"].min()
    assert sum(parts.sizes().values()) == len(data.frame)


def test_split_is_stratified_when_every_label_has_the_same_time(tmp_path: Path) -> None:
    data = load_training_set(write_set(tmp_path / "s.parquet", synthetic(times=False), FEATURES))
    parts = split(data, seed=1)
    assert parts.method == "stratified"
    rates = [p["churned"].mean() for p in (parts.train, parts.valid, parts.test)]
    assert max(rates) - min(rates) < 0.03
    assert split(data, seed=1).test["customer_id"].tolist() == parts.test["customer_id"].tolist()


@pytest.mark.parametrize("change, needle", [
    (lambda f: f.iloc[0:0], "no rows"),
    (lambda f: f.assign(churned=0), "only the class 0"),
    (lambda f: f.assign(churned=f["churned"] * 2), r"values \['2'\] are not classes of this binary task"),
    (lambda f: f.assign(tenure=f["tenure"].where(f.index > 3, np.inf)), "'tenure' has 4 infinite values"),
    (lambda f: f.assign(tenure=np.nan), "'tenure' is empty in every row"),
    (lambda f: f.assign(churned=f["churned"].astype("float").where(f.index > 0)), "1 empty values"),
])
def test_unusable_training_sets_are_refused_by_name(tmp_path: Path, change, needle: str) -> None:
    path = write_set(tmp_path / "bad.parquet", change(synthetic()), FEATURES)
    with pytest.raises(InputError, match=needle):
        load_training_set(path)


def test_a_training_set_without_its_lineage_file_is_refused(tmp_path: Path) -> None:
    synthetic().to_parquet(tmp_path / "bare.parquet")
    with pytest.raises(InputError, match=r"lineage file bare.parquet.json is missing"):
        load_training_set(tmp_path / "bare.parquet")


def test_encoder_imputes_medians_and_one_hot_encodes_known_categories() -> None:
    frame = pd.DataFrame({"a": [1.0, np.nan, 3.0], "c": ["x", "y", None]})
    enc = Encoder.fit(frame, ["a", "c"], ["c"])
    assert enc.output_names == ["a", "c=x", "c=y"]
    new = pd.DataFrame({"a": [np.nan], "c": ["never seen"]})
    assert enc.transform(new).tolist() == [[2.0, 0.0, 0.0]]
    assert Encoder.from_dict(json.loads(json.dumps(enc.to_dict()))).transform(frame).tolist() == \
        enc.transform(frame).tolist()
    with pytest.raises(InputError, match="missing feature columns: c"):
        enc.transform(frame[["a"]])


def test_mlp_exports_to_standard_onnx_that_matches_scikit_learn(training_set: Path, tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    data = load_training_set(training_set)
    prep = prepare(data, seed=3)
    learner = fit(get_family("mlp"), get_family("mlp").config({"layers": 2, "width": 16}), prep, 3, 5)
    name = learner.save(tmp_path)
    model = onnx.load(tmp_path / name)
    assert {n.domain for n in model.graph.node} == {""}, "only the standard ONNX domain (TVM takes no ai.onnx.ml)"
    session = ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
    x = prep.x["test"]
    onnx_p = session.run(None, {"features": x})[0]
    np.testing.assert_allclose(onnx_p[:, 1], learner.output(x), atol=1e-5)
    np.testing.assert_allclose(onnx_p.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("family", ["lgbm", "xgb", "mlp"])
def test_same_seed_same_model_and_the_model_learns(training_set: Path, family: str) -> None:
    data = load_training_set(training_set)
    fam = get_family(family)
    runs = []
    for _ in range(2):
        prep = prepare(data, seed=11)
        learner = fit(fam, fam.config(), prep, 11, 8)
        runs.append(learner.output(prep.x["test"]))
    np.testing.assert_array_equal(runs[0], runs[1])
    auc = classification_metrics(prep.y["test"], runs[0])["auc"]
    assert auc > 0.70, f"{family} did not learn the synthetic rule: test AUC {auc:.3f}"


@pytest.mark.parametrize("family, params", [("mlp", {}), ("xgb", {"subsample": 1.0, "colsample": 1.0})])
def test_a_checkpointed_learner_continues_where_it_stopped(training_set: Path, family: str, params: dict) -> None:
    """(XGBoost's row and column sampling draws anew after a restore, so it is compared without them.)"""
    data = load_training_set(training_set)
    prep = prepare(data, seed=2)
    fam = get_family(family)
    config = fam.config(params)
    straight = fit(fam, config, prep, 2, 6)
    half = fit(fam, config, prep, 2, 3)
    resumed = fam.start(config, prep.x["train"], prep.y["train"], 2, prep.task)
    resumed.restore(half.state())
    for _ in range(3):
        resumed.step()
    np.testing.assert_allclose(resumed.output(prep.x["test"]), straight.output(prep.x["test"]))


def test_metrics_on_known_values() -> None:
    y = np.array([0, 0, 1, 1])
    m = classification_metrics(y, np.array([0.1, 0.6, 0.4, 0.9]), threshold=0.5)
    assert m["auc"] == pytest.approx(0.75)
    assert (m["precision"], m["recall"], m["accuracy"]) == (0.5, 0.5, 0.5)
    assert classification_metrics(np.array([1, 1]), np.array([0.2, 0.9]))["auc"] is None
    # All in one bin (0.2-0.3): mean prediction 0.25 against an observed rate of 0.5.
    assert expected_calibration_error(np.array([0, 1]), np.array([0.25, 0.25])) == pytest.approx(0.25)


def test_bad_family_params_and_ranges_are_named() -> None:
    with pytest.raises(InputError, match="unknown model family 'catboost'"):
        get_family("catboost")
    with pytest.raises(InputError, match="no parameter 'depth'"):
        get_family("lgbm").config({"depth": 3})
    with pytest.raises(InputError, match=r"'learning_rate' = 2.0 lies outside"):
        get_family("lgbm").config(parse_params(["learning_rate=2"]))
    with pytest.raises(InputError, match="expected NAME=VALUE"):
        parse_params(["learning_rate"])
    lgbm = get_family("lgbm")
    with pytest.raises(InputError, match="low end must be below the high end"):
        narrowed(lgbm, parse_ranges(["num_leaves=64:8"]))
    with pytest.raises(InputError, match="lies outside"):
        narrowed(lgbm, parse_ranges(["learning_rate=0.0001:0.1"]))
    with pytest.raises(InputError, match="'abc' is not a number"):
        narrowed(lgbm, parse_ranges(["num_leaves=abc:8"]))
    space = narrowed(get_family("mlp"), parse_ranges(["batch_size=32,64", "width=16:32"]))
    assert space["batch_size"].choices == (32, 64) and (space["width"].low, space["width"].high) == (16, 32)
    assert space["width"].log, "a narrowed log-scale range stays log-scale"
