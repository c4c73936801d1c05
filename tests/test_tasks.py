"""Any task: regression and multiclass labels from real bundled data, through import, features, tuning, the gate,
registration and explanations, with every family; and the pieces each task changes, one by one."""

from __future__ import annotations

import csv
import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kiln.data.importer import ImportOptions, import_dataset
from kiln.data.task import Task, infer_task
from kiln.errors import InputError
from kiln.evaluation.gate import decide
from kiln.settings import GateSettings
from kiln.training.families import get_family
from kiln.training.metrics import objective, task_metrics
from tests.bundled import WINE_CLASSES, diabetes_csv, wine_csv
from tests.conftest import run_kiln
from tests.test_serving import approve
from tests.test_stack import serving_base_port

AS_OF = "2026-01-01"


# --- reading the task from a label ----------------------------------------------------------------------------
@pytest.mark.parametrize("values, requested, kind, classes", [
    ([0, 1, 1, 0], None, "binary", (0, 1)),
    (["red", "white", "rosé", "red"], None, "multiclass", ("red", "rosé", "white")),
    ([3, 5, 7] * 10, None, "multiclass", (3, 5, 7)),  # few whole numbers, each on many rows: classes
    ([3, 5, 7] * 10, "regression", "regression", ()),  # unless asked for a number
    (list(np.linspace(1.5, 300.0, 50)), None, "regression", ()),
    (list(range(100, 400)), None, "regression", ()),  # whole numbers, nearly all distinct: a measurement
])
def test_the_task_is_read_from_the_label_or_given(values, requested, kind, classes) -> None:
    task = infer_task(pd.Series(values), "label 'y'", requested)
    assert (task.kind, task.classes) == (kind, classes)


@pytest.mark.parametrize("values, requested, needle", [
    (["a", "a", "a"], None, "1 distinct value"),
    (["a", "b", "c"], "binary", "--task binary needs two classes"),
    (["a", "b", "a"], "regression", "must be numeric"),
    ([1, 2], "ordinal", "--task ordinal: choose one of binary, multiclass, regression"),
])
def test_a_label_that_cannot_be_the_task_is_refused_by_name(values, requested, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        infer_task(pd.Series(values), "label 'y'", requested)


def test_class_codes_round_trip_and_an_unknown_class_is_named() -> None:
    task = Task("multiclass", ("barbera", "barolo", "grignolino"))
    assert task.codes(pd.Series(["barolo", "barbera", "grignolino"]), "y").tolist() == [1, 0, 2]
    with pytest.raises(InputError, match=r"\['nebbiolo'\] are not classes"):
        task.codes(pd.Series(["barolo", "nebbiolo"]), "y")
    assert Task.from_dict(json.loads(json.dumps(task.to_dict()))) == task


# --- importing ------------------------------------------------------------------------------------------------
def _rows(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _grapes(n: int = 30) -> list[dict[str, str]]:
    return [{"id": str(i), "acidity": f"{3 + i % 7 * 0.1:.2f}", "colour": ["red", "white"][i % 2],
             "grape": ["nebbiolo", "barbera", "dolcetto"][i % 3], "price": f"{10 + i * 1.37:.2f}"}
            for i in range(1, n + 1)]


def test_import_reads_a_multiclass_and_a_regression_label(tmp_path: Path) -> None:
    csv_path = _rows(tmp_path / "grapes.csv", _grapes())
    multi = import_dataset(ImportOptions(csv=csv_path, entity="id", label="grape", as_of=date.fromisoformat(AS_OF)),
                           tmp_path / "by_grape")
    assert (multi.task, multi.classes, multi.positive_rate) == ("multiclass", ["barbera", "dolcetto", "nebbiolo"], None)
    labels = pd.read_parquet(tmp_path / "by_grape" / "labels.parquet")
    assert sorted(labels["grape"].unique()) == ["barbera", "dolcetto", "nebbiolo"], "classes keep their own values"
    reg = import_dataset(ImportOptions(csv=csv_path, entity="id", label="price", as_of=date.fromisoformat(AS_OF)),
                         tmp_path / "by_price")
    assert reg.task == "regression" and reg.classes == []
    assert pd.read_parquet(tmp_path / "by_price" / "labels.parquet")["price"].dtype == "float64"
    res = run_kiln("data", "validate", tmp_path / "by_price", "--json")
    assert res.code == 0, res.stderr


def test_exact_duplicates_are_told_apart_from_conflicting_rows(tmp_path: Path) -> None:
    rows = _grapes()
    exact = [*rows, dict(rows[4]), dict(rows[9]), dict(rows[9])]  # CSV lines 32, 33, 34 repeat lines 6 and 11
    opts = {"entity": "id", "label": "grape", "as_of": date.fromisoformat(AS_OF)}
    with pytest.raises(InputError, match=r"3 rows are exact duplicates .*\[32, 33, 34\]\); no rows conflict") as info:
        import_dataset(ImportOptions(csv=_rows(tmp_path / "exact.csv", exact), **opts), tmp_path / "a")
    assert "--drop-duplicates" in info.value.hint
    assert not (tmp_path / "a").exists(), "a refused import writes nothing"

    done = import_dataset(ImportOptions(csv=tmp_path / "exact.csv", drop_duplicates=True, **opts), tmp_path / "b")
    assert (done.rows, done.duplicates_dropped) == (30, 3)

    conflicting = [*exact, {**rows[2], "price": "99.00"}]  # line 35 shares line 4's id with another price
    with pytest.raises(InputError, match=r"2 rows share a key but differ .*\[4, 35\]\); 3 more rows are exact"):
        import_dataset(ImportOptions(csv=_rows(tmp_path / "clash.csv", conflicting), drop_duplicates=True, **opts),
                       tmp_path / "c")
    assert not (tmp_path / "c").exists()


# --- metrics, objective and gate per task ---------------------------------------------------------------------
def test_metrics_follow_the_task() -> None:
    y = np.array([0, 1, 2, 2, 1, 0])
    p = np.eye(3)[[0, 1, 2, 1, 1, 0]] * 0.9 + 0.1 / 3
    m = task_metrics(Task("multiclass", ("a", "b", "c")), y, p)
    assert m["accuracy"] == pytest.approx(5 / 6) and m["recall_c"] == pytest.approx(0.5) and m["recall_a"] == 1.0
    r = task_metrics(Task("regression"), np.array([1.0, 2.0, 4.0]), np.array([1.0, 2.0, 2.0]))
    assert r["rmse"] == pytest.approx(np.sqrt(4 / 3)) and r["mae"] == pytest.approx(2 / 3)
    assert r["mape"] == pytest.approx(0.5 / 3)
    assert objective(Task("regression")).mode == "min" and objective(Task("binary", (0, 1))).mode == "max"


def test_the_gate_reads_each_tasks_metric_and_direction() -> None:
    policy = GateSettings.model_validate({"regression": {"metric": "rmse", "limit": 50.0, "max_drop": 2.0}})
    ok = decide(policy, "regression", {"rmse": 48.0, "r2": 0.4}, {"rmse": 47.0}, [])
    assert ok.passed, ok.reasons
    worse = decide(policy, "regression", {"rmse": 49.5}, {"rmse": 47.0}, [])
    assert worse.reasons == ["RMSE rise against the champion = 2.5000 (limit <= 2.0): champion 47.0000, "
                             "challenger 49.5000"]
    multi = decide(GateSettings(), "multiclass", {"f1_macro": 0.42}, None, [])
    assert multi.reasons == ["test macro F1 = 0.4200 (limit >= 0.5)"]
    with pytest.raises(ValueError, match="'auc' is not a regression metric"):
        GateSettings.model_validate({"regression": {"metric": "auc", "limit": 0.7, "max_drop": 0.01}})


def test_multiclass_quality_is_measured_when_a_class_has_no_labelled_row() -> None:
    """Evidently's preset fails on such a window (its per-class tables); the overall metrics still come out."""
    from kiln.monitoring.quality import model_quality

    task = Task("multiclass", ("a", "b", "c"))
    p = np.tile([0.7, 0.2, 0.1], (60, 1))
    labelled = pd.DataFrame({"label": ["a"] * 45 + ["b"] * 15, "prediction": ["a"] * 60, "probability": p[:, 0],
                             **{f"probability_{c}": p[:, i] for i, c in enumerate("abc")}})
    metrics, _ = model_quality(task, labelled, 0.5)
    assert metrics["accuracy"] == pytest.approx(0.75) and metrics["log_loss"] > 0


# --- families on each task ------------------------------------------------------------------------------------
def _blobs(kind: str, n: int = 300) -> tuple[np.ndarray, np.ndarray, Task]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4))
    if kind == "regression":
        return x, 100 + 30 * x[:, 0] - 20 * x[:, 1] + rng.normal(scale=5, size=n), Task("regression")
    return x, (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int), Task("multiclass", ("lo", "mid", "hi"))


@pytest.mark.parametrize("kind", ["multiclass", "regression"])
def test_the_mlp_exports_each_task_to_standard_onnx_that_matches(kind: str, tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    x, y, task = _blobs(kind)
    family = get_family("mlp")
    learner = family.start(family.config({"width": 16}), x, y, 1, task)
    for _ in range(30):
        learner.step()
    model = onnx.load(tmp_path / learner.save(tmp_path))
    assert {n.domain for n in model.graph.node} == {""}
    out = ort.InferenceSession(model.SerializeToString()).run(None, {"features": x.astype(np.float32)})[0]
    ours = learner.output(x)
    if kind == "regression":
        np.testing.assert_allclose(out[:, 0], ours, rtol=1e-4, atol=1e-3)
        assert task_metrics(task, y, ours)["r2"] > 0.9, "the network learned the linear rule in the label's units"
    else:
        np.testing.assert_allclose(out, ours, atol=1e-5)
        assert task_metrics(task, y, ours)["accuracy"] > 0.75, "the network learned the two thresholds"


def test_lightgbm_steps_end_when_no_split_helps() -> None:
    """A step used to wait for the round count to reach the next ten, which it never does once LightGBM stops."""
    x, y, task = _blobs("multiclass", n=40)
    family = get_family("lgbm")
    learner = family.start(family.config({"min_child_samples": 100}), x, y, 1, task)  # no leaf can be that large
    learner.step()
    learner.step()
    assert learner.output(x).shape == (40, 3)


# --- the lifecycle on real bundled data -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace holding the diabetes (regression) and wine (multiclass) datasets and their training sets."""
    root = tmp_path_factory.mktemp("tasks")
    ws = root / "ws"
    assert run_kiln("init", ws).code == 0
    with (ws / "kiln.yaml").open("a") as fh:
        fh.write(f"serving:\n  base_port: {serving_base_port()}\n")  # endpoints on ports no other module uses
        fh.write("monitoring:\n  attribution_rows: 40\n")  # the live SHAP ranking of a small window
    for name, path, entity, label, extra in (
            # a lower disease progression is the favourable outcome bias is measured by (age and sex are protected)
            ("diabetes", diabetes_csv(root / "diabetes.csv"), "patient", "target", ["--favourable", "<140"]),
            ("wine", wine_csv(root / "wine.csv"), "bottle", "cultivar", [])):
        res = run_kiln("data", "import", path, "--entity", entity, "--label", label, "--as-of", AS_OF, "--name", name,
                       "--out", ws / "data" / name, *extra, "--json")
        assert res.code == 0, res.stderr
        assert run_kiln("features", "ingest", ws / "data" / name, "-w", ws).code == 0
        res = run_kiln("features", "training-set", "--labels", ws / "data" / name, "--service", f"{name}_v1",
                       "--out", ws / f"{name}.parquet", "-w", ws, "--json")
        assert res.code == 0, res.stderr
    return ws


def _tune_and_register(ws: Path, name: str, how: list[str], *ranges: str, iterations: int = 6) -> dict:
    narrowed = [arg for r in ranges for arg in ("--range", r)]
    res = run_kiln("tune", "-t", ws / f"{name}.parquet", *how, "-n", "2", "--max-iterations", str(iterations),
                   *narrowed, "-w", ws, "--json", timeout=600)
    assert res.code == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def diabetes_mlp(bundled: Path) -> dict:
    """The MLP tuned on diabetes and registered as diabetes/1."""
    return _tune_and_register(bundled, "diabetes", ["-f", "mlp"])


@pytest.fixture(scope="module")
def wine_lgbm(bundled: Path) -> dict:
    """LightGBM tuned on wine and registered as wine/1."""
    # 124 training rows: leaves of up to 100 rows (the family's range, sized for larger data) could not split at all
    return _tune_and_register(bundled, "wine", ["-f", "lgbm"], "min_child_samples=5:15", "learning_rate=0.05:0.3")


XGB_EXAMPLE = Path(__file__).parents[1] / "examples" / "xgboost" / "train.py"


@pytest.fixture(scope="module")
def wine_xgb(bundled: Path) -> dict:
    """XGBoost tuned on wine and registered as wine-xgb/1."""
    return _tune_and_register(bundled, "wine", ["-f", "xgb", "--model-name", "wine-xgb"])


@pytest.fixture(scope="module")
def diabetes_own(bundled: Path) -> dict:
    """Your own training code (XGBoost's own loop, examples/xgboost) tuned on diabetes, registered as
    diabetes-own/1."""
    return _tune_and_register(bundled, "diabetes", ["--entry-point", XGB_EXAMPLE, "--model-name", "diabetes-own"],
                              "max_depth=2:4", iterations=4)


def _pyfunc_answers(ws: Path, ref: str, rows: pd.DataFrame) -> pd.DataFrame:
    import mlflow.pyfunc

    from kiln.tracking import client
    from kiln.workspace import open_workspace

    client(open_workspace(ws))
    return mlflow.pyfunc.load_model(ref).predict(rows)


def test_regression_on_diabetes_tunes_gates_registers_and_explains(bundled: Path, diabetes_mlp: dict) -> None:
    tuned = result = diabetes_mlp
    assert (result["metric"], result["mode"]) == ("rmse", "min")
    best = min(t["valid_score"] for t in result["trials"])
    assert result["best"]["valid_score"] == best, "the lowest validation RMSE is the best trial"
    assert result["metrics"]["test"]["r2"] > 0.3, "disease progression is learnable from these measurements"
    reg = tuned["registered"]
    assert reg["evaluation"]["task"] == "regression" and reg["version"]["gate"] == "passed"
    assert reg["evaluation"]["gate"]["checks"][0]["name"] == "test R²"

    rows = pd.read_parquet(bundled / "diabetes.parquet").head(5)
    answer = _pyfunc_answers(bundled, "models:/diabetes/1", rows.drop(columns=["target"]))
    assert list(answer.columns) == ["prediction"] and answer["prediction"].between(25, 346).all()

    res = run_kiln("clarify", "explain", "diabetes/1", "--rows", "60", "-w", bundled, "--json")
    assert res.code == 0, res.stderr
    ranking = [r["feature"] for r in json.loads(res.stdout)["global_importance"]]
    assert {"bmi", "s5"} & set(ranking[:3]), f"bmi or s5 lead the diabetes data's explanations; got {ranking}"
    card = run_kiln("models", "card", "diabetes/1", "-w", bundled, "--json")
    text = Path(json.loads(card.stdout)["markdown_path"]).read_text()
    assert "task: regression" in text and "Predicts the value of `target` for each `patient`" in text
    assert "| rmse |" in text and "churn" not in text


def test_multiclass_on_wine_tunes_gates_and_answers_named_classes(bundled: Path, wine_lgbm: dict) -> None:
    tuned = result = wine_lgbm
    assert (result["metric"], result["mode"]) == ("log_loss", "min")
    test = result["metrics"]["test"]
    assert test["accuracy"] > 0.85 and {f"recall_{c}" for c in WINE_CLASSES.values()} <= set(test)
    reg = tuned["registered"]
    assert reg["version"]["gate"] == "passed" and reg["evaluation"]["gate_metric"] == "f1_macro"

    rows = pd.read_parquet(bundled / "wine.parquet")
    answer = _pyfunc_answers(bundled, "models:/wine/1", rows.drop(columns=["cultivar"]))
    probabilities = answer[[f"probability_{c}" for c in sorted(WINE_CLASSES.values())]]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert (answer["prediction"] == rows["cultivar"]).mean() > 0.9, "named classes come back, mostly right"


def test_endpoints_answer_each_task_on_v1_and_v2(bundled: Path, diabetes_mlp: dict, wine_lgbm: dict) -> None:
    """A regression endpoint (the MLP by MLflow, its ONNX graph as the shadow) and a multiclass one (LightGBM)."""
    import httpx

    (bundled / "diabetes.yaml").write_text(
        "name: diabetes\nvariants: [{name: main, model: 'models:/diabetes/1'}]\n"
        "shadow: {name: graph, model: 'models:/diabetes/1', runtime: onnx}\ncapture: {flush_seconds: 0.2}\n")
    for ref in ("diabetes/1", "wine/1"):  # production variants serve approved versions
        approve(bundled, ref)
    try:
        for spec in (bundled / "diabetes.yaml", "--model"):
            args = [spec] if spec != "--model" else ["--model", "models:/wine/1"]
            res = run_kiln("endpoint", "deploy", *args, "-w", bundled, "--json", timeout=300)
            assert res.code == 0, res.stderr
        urls = {n: json.loads(run_kiln("endpoint", "status", n, "-w", bundled, "--json").stdout)["url"]
                for n in ("diabetes", "wine")}
        sick = pd.read_parquet(bundled / "diabetes.parquet").head(4)
        features = [c for c in sick.columns if c not in ("patient", "label_timestamp", "target")]
        rows = json.loads(sick[features].to_json(orient="records"))
        for _ in range(5):
            v1 = httpx.post(f"{urls['diabetes']}/v1/models/diabetes:predict", json={"instances": rows}, timeout=30)
            assert v1.status_code == 200, v1.text
        answers = v1.json()["predictions"]
        assert [set(a) for a in answers] == [{"prediction"}] * 4 and all(25 < a["prediction"] < 346 for a in answers)
        v2 = httpx.post(f"{urls['diabetes']}/v2/models/diabetes/infer", timeout=30, json={"inputs": [
            {"name": f, "shape": [4], "datatype": "FP64", "data": sick[f].tolist()} for f in features]})
        assert v2.status_code == 200, v2.text
        [out] = v2.json()["outputs"]
        assert (out["name"], out["datatype"]) == ("prediction", "FP64")
        np.testing.assert_allclose(out["data"], [a["prediction"] for a in answers], rtol=1e-6)

        wines = pd.read_parquet(bundled / "wine.parquet").head(3)
        cols = [c for c in wines.columns if c not in ("bottle", "label_timestamp", "cultivar")]
        v1 = httpx.post(f"{urls['wine']}/v1/models/wine:predict", timeout=30,
                        json={"instances": json.loads(wines[cols].to_json(orient="records"))})
        assert v1.status_code == 200, v1.text
        first = v1.json()["predictions"][0]
        assert first["prediction"] in WINE_CLASSES.values() and first["probability"] == max(
            first[f"probability_{c}"] for c in WINE_CLASSES.values())
        v2 = httpx.post(f"{urls['wine']}/v2/models/wine/infer", timeout=30, json={"inputs": [
            {"name": f, "shape": [3], "datatype": "FP64", "data": wines[f].tolist()} for f in cols]})
        outputs = {o["name"]: o for o in v2.json()["outputs"]}
        assert outputs["prediction"]["datatype"] == "BYTES"
        assert outputs["prediction"]["data"] == [p["prediction"] for p in v1.json()["predictions"]]

        import time

        time.sleep(1.0)  # the front flushes capture every 0.2 s
        compared = json.loads(run_kiln("endpoint", "compare", "diabetes", "-w", bundled, "--json").stdout)
        assert compared["label_agreement"] is None, "predicted numbers are compared by difference, not agreement"
        assert compared["rows"] >= 4 and compared["score_max_abs_diff"] < 1e-3, \
            "the ONNX graph answers what the MLflow model answers"

        for name, label, features_of in (("diabetes", "target", features), ("wine", "cultivar", cols)):
            _monitor(bundled, name, name, label, features_of, urls[name])
    finally:
        run_kiln("down", "-w", bundled)


def _monitor(ws: Path, name: str, dataset: str, label: str, features: list[str], url: str) -> None:
    """One request a row with a known inference id, the rows' true labels, then a monitor run over the capture of
    endpoint ``name`` (serving a model of ``dataset``)."""
    import time

    import httpx

    rows = pd.read_parquet(ws / f"{dataset}.parquet").sample(n=120, random_state=1)  # wine is stored class by class
    records = json.loads(rows[features].to_json(orient="records"))
    with httpx.Client(timeout=30) as http:
        for i, record in enumerate(records):
            res = http.post(f"{url}/v1/models/{name}:predict", json={"instances": [record]},
                            headers={"x-kiln-inference-id": f"{name}-{i}"})
            assert res.status_code == 200, res.text
    truth = ws / f"{name}-truth.csv"  # with each row's entity and label time: the feature store has its facets
    rows.assign(inference_id=[f"{name}-{i}" for i in range(len(rows))]).drop(columns=features).to_csv(truth,
                                                                                                      index=False)
    stored = run_kiln("monitor", "labels", truth, "-e", name, "-w", ws, "--json")
    assert stored.code == 0, stored.stderr
    assert json.loads(stored.stdout)["positive_rate"] is None, "no positive class outside a binary task"
    from kiln.serving.capture import read_capture

    sent, deadline = {f"{name}-{i}" for i in range(len(rows))}, time.monotonic() + 60
    while not sent <= {r["inference_id"] for r in read_capture(ws / "capture", name)}:  # flushed every 0.2 s, or
        assert time.monotonic() < deadline, "the requests were not captured"  # later on a busy machine
        time.sleep(0.5)
    res = run_kiln("monitor", "run", "-e", name, "-w", ws, "--json", timeout=600)
    assert res.code in (0, 2), res.stderr  # 2: violations found, reported in the result
    monitors = json.loads(res.stdout)["monitors"]
    quality = monitors["model_quality"]
    assert quality["rows"] >= 100, quality
    if dataset == "diabetes":
        assert quality["observed"]["r2"] > 0.2 and quality["observed"]["rmse"] < 80, quality
        assert quality["baseline"]["rmse"] > 0
        assert monitors["bias_drift"]["facets"], monitors["bias_drift"]  # outcomes below 140, by age and sex
    else:
        assert quality["observed"]["f1_macro"] > 0.85 and quality["observed"]["accuracy"] > 0.85, quality
        assert "protected" in (monitors["bias_drift"]["note"] or ""), monitors["bias_drift"]


def test_each_task_compiles_and_the_edge_agent_answers_as_the_platform(bundled: Path, diabetes_mlp: dict,
                                                                       wine_lgbm: dict) -> None:
    """The MLP's regression graph and LightGBM's softmax trees, compiled by TVM for this machine, loaded as a device
    loads them: the same answers as the registered model's."""
    for ref in ("diabetes/1", "wine/1"):
        manifest = _compiled_answers_as_registered(bundled, ref, ref.split("/")[0])
        assert manifest["details"]["parity"]["max_abs_diff"] <= 1e-5
        if ref == "diabetes/1":
            assert manifest["output"]["shape"] == [-1, 1] and manifest["model"]["task"] == "regression"
        else:
            assert manifest["output"]["columns"] == [f"probability_{c}" for c in sorted(WINE_CLASSES.values())]


def _compiled_answers_as_registered(ws: Path, ref: str, dataset: str) -> dict:
    """``ref`` compiled by TVM for this machine and loaded as a device loads it answers as the registered model does;
    its bundle's manifest."""
    from kiln_edge.model import CompiledModel

    res = run_kiln("compile", ref, "--target", "x86_64", "-w", ws, "--json", timeout=600)
    assert res.code == 0, res.stderr[-2000:]
    bundle = Path(json.loads(res.stdout)["path"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    rows = pd.read_parquet(ws / f"{dataset}.parquet").head(20)
    features = manifest["model"]["features"]
    want = _pyfunc_answers(ws, f"models:/{ref}", rows[features])
    got = pd.DataFrame(CompiledModel(bundle, manifest).predict(json.loads(rows[features].to_json(orient="records"))))
    assert list(got.columns) == list(want.columns)
    if manifest["model"]["task"] == "regression":
        np.testing.assert_allclose(got["prediction"], want["prediction"], rtol=1e-5)
    else:
        assert got["prediction"].tolist() == want["prediction"].tolist()
        np.testing.assert_allclose(got.drop(columns="prediction"), want.drop(columns="prediction"), atol=1e-5)
    return manifest


def test_xgboost_and_an_entry_point_are_explained_served_monitored_and_compiled(bundled: Path, wine_xgb: dict,
                                                                                 diabetes_own: dict) -> None:
    """The families the tests above leave out, from their tuning jobs on: XGBoost on wine, and your own training code
    (XGBoost's own loop, examples/xgboost) on diabetes, explained, behind endpoints, monitored and compiled."""
    import httpx

    assert wine_xgb["metrics"]["test"]["accuracy"] > 0.85 and wine_xgb["registered"]["version"]["gate"] == "passed"
    own = diabetes_own["registered"]["version"]
    assert diabetes_own["metrics"]["test"]["r2"] > 0.2 and own["gate"] == "passed"
    assert own["tags"]["kiln.family"] == "entry" and all(t["iterations"] <= 4 for t in diabetes_own["trials"])
    cases = (("wine-xgb", "wine", "cultivar", {"proline", "flavanoids", "color_intensity"}),
             ("diabetes-own", "diabetes", "target", {"bmi", "s5"}))
    for name, _, _, _ in cases:  # production variants serve approved versions
        approve(bundled, f"{name}/1")
    for name, _, _, leaders in cases:
        res = run_kiln("clarify", "explain", f"{name}/1", "--rows", "40", "-w", bundled, "--json")
        assert res.code == 0, res.stderr
        ranking = [r["feature"] for r in json.loads(res.stdout)["global_importance"]]
        assert leaders & set(ranking[:3]), f"{name}: {leaders} lead its explanations; got {ranking}"
    try:
        for name, dataset, label, _ in cases:
            res = run_kiln("endpoint", "deploy", "--model", f"models:/{name}/1", "-w", bundled, "--json", timeout=300)
            assert res.code == 0, res.stderr
            url = json.loads(run_kiln("endpoint", "status", name, "-w", bundled, "--json").stdout)["url"]
            rows = pd.read_parquet(bundled / f"{dataset}.parquet").head(3)
            features = [c for c in rows.columns if c not in ("bottle", "patient", "label_timestamp", label)]
            v1 = httpx.post(f"{url}/v1/models/{name}:predict", timeout=30,
                            json={"instances": json.loads(rows[features].to_json(orient="records"))})
            assert v1.status_code == 200, v1.text
            want = _pyfunc_answers(bundled, f"models:/{name}/1", rows[features])
            served = [p["prediction"] for p in v1.json()["predictions"]]
            if dataset == "diabetes":
                np.testing.assert_allclose(served, want["prediction"], rtol=1e-6)
            else:
                assert served == want["prediction"].tolist()
            _monitor(bundled, name, dataset, label, features, url)
    finally:
        run_kiln("down", "-w", bundled)

    for name, dataset, _, _ in cases:
        manifest = _compiled_answers_as_registered(bundled, f"{name}/1", dataset)
        assert manifest["model"]["family"] == ("entry" if name == "diabetes-own" else "xgb")


@pytest.mark.parametrize("name, family, metric, floor", [
    ("diabetes", "lgbm", "r2", 0.2), ("diabetes", "xgb", "r2", 0.2),
    ("wine", "mlp", "accuracy", 0.85), ("wine", "xgb", "accuracy", 0.85),
])
def test_each_family_trains_each_task(bundled: Path, name: str, family: str, metric: str, floor: float) -> None:
    res = run_kiln("train", "-t", bundled / f"{name}.parquet", "-f", family, "-w", bundled, "--json")
    assert res.code == 0, res.stderr
    trained = json.loads(res.stdout)
    assert trained["metrics"]["test"][metric] > floor


def test_a_regression_training_set_can_be_trained_as_classes_only_when_it_has_few_values(bundled: Path) -> None:
    res = run_kiln("train", "-t", bundled / "diabetes.parquet", "--task", "multiclass", "-w", bundled)
    assert res.code == 1 and "more than 100 classes" in res.stderr


# --- your own training code -----------------------------------------------------------------------------------
EXAMPLE = Path(__file__).parents[1] / "examples" / "sklearn" / "train.py"


def test_an_entry_point_trains_registers_and_explains_like_a_family(bundled: Path) -> None:
    res = run_kiln("train", "-t", bundled / "wine.parquet", "--entry-point", EXAMPLE, "-p", "max_depth=3", "-w",
                   bundled, "--json")
    assert res.code == 0, res.stderr[-2000:]
    trained = json.loads(res.stdout)
    assert (trained["family"], trained["iterations"], trained["config"]["max_depth"]) == ("entry", 8, 3)
    assert trained["metrics"]["test"]["accuracy"] > 0.85
    from mlflow import MlflowClient

    history = MlflowClient(f"sqlite:///{bundled}/models/mlflow.db").get_metric_history(trained["run_id"],
                                                                                       "valid_log_loss")
    assert [m.step for m in history if m.step] == list(range(1, 9)), "each report() is scored and logged"
    reg = run_kiln("models", "register", trained["run_id"], "--name", "wine_own", "-w", bundled, "--json")
    assert reg.code == 0, reg.stderr
    version = json.loads(reg.stdout)["version"]
    assert version["gate"] == "passed" and version["tags"]["kiln.family"] == "entry"
    rows = pd.read_parquet(bundled / "wine.parquet")
    answer = _pyfunc_answers(bundled, f"models:/wine_own/{version['version']}", rows.drop(columns=["cultivar"]))
    assert (answer["prediction"] == rows["cultivar"]).mean() > 0.9
    res = run_kiln("clarify", "explain", f"wine_own/{version['version']}", "--rows", "20", "-w", bundled, "--json")
    assert res.code == 0, res.stderr
    assert json.loads(res.stdout)["explainer"] == "PermutationExplainer"
    res = run_kiln("compile", f"wine_own/{version['version']}", "--target", "x86_64", "-w", bundled)
    assert res.code == 1 and "HistGradientBoostingClassifier, MLflow flavor sklearn) has no exporter" in res.stderr, \
        res.stderr  # scikit-learn's own trees: no exporter (an XGBoost or LightGBM booster compiles)

    from kiln.monitoring.retrain import retrain
    from kiln.workspace import open_workspace

    again = retrain(open_workspace(bundled), f"wine_own/{version['version']}")  # as a monitor's retrain does
    assert again.gate == "passed" and again.version == f"wine_own/{int(version['version']) + 1}"
    rerun = MlflowClient(f"sqlite:///{bundled}/models/mlflow.db").get_run(again.run_id)
    assert rerun.data.params["max_depth"] == "3" and rerun.data.tags["kiln.entry_point"] == str(EXAMPLE.resolve())


def test_an_entry_point_is_tuned_over_its_params(bundled: Path) -> None:
    res = run_kiln("tune", "-t", bundled / "wine.parquet", "--entry-point", EXAMPLE, "-s", "random", "-n", "2",
                   "--max-iterations", "2", "--range", "max_depth=2:4", "--no-register", "-w", bundled, "--json",
                   timeout=600)
    assert res.code == 0, res.stderr[-2000:]
    tuned = json.loads(res.stdout)
    trials = [t for t in tuned["trials"] if t["source"] == "run"]
    assert len(trials) == 2 and all(t["iterations"] == 2 for t in trials), "a trial ends at --max-iterations reports"
    assert all(2 <= t["config"]["max_depth"] <= 4 for t in trials)
    assert tuned["best"]["valid_score"] == min(t["valid_score"] for t in trials)  # log-loss: lower is better
    assert tuned["metrics"]["test"]["accuracy"] > 0.85 and tuned["model_uri"].startswith("models:/")


def test_a_failing_entry_point_is_reported_with_its_own_line_and_leaves_no_model(bundled: Path,
                                                                                tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("def train(context):\n    rows = len(context.x_train)\n    return 1 / (rows - rows)\n\n\n"
                      "def predict(model, x):\n    return x\n")
    res = run_kiln("train", "-t", bundled / "wine.parquet", "--entry-point", broken, "-w", bundled)
    assert res.code == 1, res.stderr
    assert f"{broken}:3 in train: ZeroDivisionError: division by zero" in res.stderr
    assert "return 1 / (rows - rows)" in res.stderr, "the user's own traceback, with the line"
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{bundled}/models/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string="params.entry_point = 'broken.py'")
    assert runs and all(r.info.status == "FAILED" for r in runs)
    assert not client.search_logged_models([r.info.experiment_id for r in runs],
                                           filter_string=f"source_run_id = '{runs[0].info.run_id}'")

    (tmp_path / "empty.py").write_text("def train(context):\n    return None\n")
    res = run_kiln("train", "-t", bundled / "wine.parquet", "--entry-point", tmp_path / "empty.py", "-w", bundled)
    assert res.code == 1 and "defines no predict()" in res.stderr
    (tmp_path / "shape.py").write_text("from sklearn.dummy import DummyClassifier\n\n\ndef train(context):\n"
                                       "    return DummyClassifier().fit(context.x_train, context.y_train)\n\n\n"
                                       "def predict(model, x):\n    return x[:, 0]\n")
    res = run_kiln("train", "-t", bundled / "wine.parquet", "--entry-point", tmp_path / "shape.py", "-w", bundled)
    assert res.code == 1 and "a multiclass model answers" in res.stderr, res.stderr
    (tmp_path / "odd.py").write_text("def train(context):\n    return object()\n\n\ndef predict(model, x):\n"
                                     "    return x\n")
    res = run_kiln("train", "-t", bundled / "wine.parquet", "--entry-point", tmp_path / "odd.py", "-w", bundled)
    assert res.code == 1 and "Kiln saves models of scikit-learn, XGBoost" in res.stderr, res.stderr


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_an_entry_points_booster_compiles_only_if_predict_answers_what_it_predicts(kind: str) -> None:
    import xgboost as xgb

    from kiln.compile.entry_graph import check_answers
    from kiln.training.xgb_onnx import xgb_to_onnx

    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = {"binary": x[:, 0] > 0, "multiclass": np.digitize(x[:, 0], [-0.5, 0.5]), "regression": 3 * x[:, 0] + x[:, 1]}
    params = {"binary": {"objective": "binary:logistic"}, "regression": {"objective": "reg:squarederror"},
              "multiclass": {"objective": "multi:softprob", "num_class": 3}}[kind]
    booster = xgb.train({**params, "max_depth": 3}, xgb.DMatrix(x, label=y[kind].astype(float)), 20)
    task = Task(kind, ("a", "b", "c") if kind == "multiclass" else (0, 1) if kind == "binary" else ())
    graph = xgb_to_onnx(booster, 4)
    own = booster.predict(xgb.DMatrix(x)).astype(np.float64)
    assert check_answers(graph, lambda rows: own, task, x, "m/1") <= 1e-4
    with pytest.raises(InputError, match=r"m/1: its predict\(\) answers .* on held-out row 0 where the booster"):
        check_answers(graph, lambda rows: own + 0.01 * (np.arange(len(own)) == 0).reshape(-1, *[1] * (own.ndim - 1)),
                      task, x, "m/1")
    if kind == "binary":
        margins = booster.predict(xgb.DMatrix(x), output_margin=True).astype(np.float64)
        with pytest.raises(InputError, match="where the booster inside answers"):
            check_answers(graph, lambda rows: margins, task, x, "m/1")


KERAS_EXAMPLE = Path(__file__).parents[1] / "examples" / "keras" / "train.py"


@pytest.mark.parametrize("name, label, metric, floor", [("wine", "cultivar", "accuracy", 0.85),
                                                         ("diabetes", "target", "r2", 0.2)])
def test_the_keras_entry_point_trains_registers_and_answers_each_task(bundled: Path, name: str, label: str,
                                                                      metric: str, floor: float) -> None:
    """A deep-learning network (Keras 3 on JAX, CPU) as your own training code: saved by MLflow's keras flavor inside
    the model folder, loaded again by it, and answering through the pyfunc as its own predict() does."""
    res = run_kiln("train", "-t", bundled / f"{name}.parquet", "--entry-point", KERAS_EXAMPLE, "-w", bundled, "--json",
                   timeout=300)
    assert res.code == 0, res.stderr[-2000:]
    trained = json.loads(res.stdout)
    assert (trained["family"], trained["iterations"]) == ("entry", 30), "one report per epoch"
    assert trained["metrics"]["test"][metric] > floor
    reg = run_kiln("models", "register", trained["run_id"], "--name", f"{name}_keras", "-w", bundled, "--json")
    assert reg.code == 0, reg.stderr
    version = json.loads(reg.stdout)["version"]
    assert version["gate"] == "passed", json.loads(reg.stdout)["evaluation"]["gate"]
    ref = f"models:/{name}_keras/{version['version']}"
    rows = pd.read_parquet(bundled / f"{name}.parquet")
    answer = _pyfunc_answers(bundled, ref, rows.drop(columns=[label]))

    import mlflow.artifacts
    import mlflow.keras
    from mlflow.models import Model

    from kiln.training.encoding import Encoder
    from kiln.training.entry import load_entry_point

    local = Path(mlflow.artifacts.download_artifacts(ref))
    folder = local / Model.load(local / "MLmodel").flavors["python_function"]["artifacts"]["model_folder"]["path"]
    assert Model.load(folder / "user_model" / "MLmodel").flavors["keras"]["keras_backend"] == "jax"
    network = mlflow.keras.load_model(str(folder / "user_model"))
    encoder = Encoder.from_dict(json.loads((folder / "encoder.json").read_text()))
    own = load_entry_point(KERAS_EXAMPLE).predict(network, encoder.transform(rows.drop(columns=[label])))
    if name == "wine":
        columns = [f"probability_{c}" for c in sorted(WINE_CLASSES.values())]  # the classes in Kiln's order
        np.testing.assert_allclose(answer[columns].to_numpy(), own, rtol=1e-6, atol=1e-6)
        assert (answer["prediction"] == rows[label]).mean() > 0.9, "named classes come back, mostly right"
    else:
        np.testing.assert_allclose(answer["prediction"].to_numpy(), own, rtol=1e-6)
        residual = ((answer["prediction"] - rows[label]) ** 2).sum()
        assert 1 - residual / ((rows[label] - rows[label].mean()) ** 2).sum() > 0.3, "R² over every patient"
