"""The Debugger: SageMaker's built-in rules on real training of each family, their actions, the profiler, the report
in the MLflow run and the model card, tuning trials a rule stops, and bad rule input named."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kiln.errors import InputError, SettingsError
from kiln.settings import DebuggerSettings, load_settings
from kiln.training.data import load_training_set
from kiln.training.debugger import Debugger, Profiler, configure
from kiln.training.families import get_family
from kiln.training.prepare import Prepared, fit, prepare, start
from tests.conftest import run_kiln
from tests.test_training import FEATURES, synthetic, write_set


def prepared(tmp_path: Path, frame: pd.DataFrame, features: list[str] = FEATURES, name: str = "ts") -> Prepared:
    return prepare(load_training_set(write_set(tmp_path / f"{name}.parquet", frame, features)), seed=1)


def noisy(n: int = 300) -> pd.DataFrame:
    """The synthetic churn rule with 30% of the labels flipped: a model that memorises the rows gets worse."""
    frame = synthetic(n, seed=4)
    flip = np.random.default_rng(1).random(n) < 0.3
    frame["churned"] = np.where(flip, 1 - frame["churned"], frame["churned"])
    return frame


OVERFIT = {"num_leaves": 128, "learning_rate": 0.5, "min_child_samples": 5}


def debugged(family: str, prep: Prepared, config: dict, iterations: int | None = None,
             settings: DebuggerSettings | None = None) -> Debugger:
    fam = get_family(family)
    session = Debugger(settings, profile=False)
    fit(fam, {**fam.defaults, **config}, prep, 1, iterations or fam.max_iterations, debugger=session)
    return session


def fired(session: Debugger) -> dict[str, str]:
    return {f.rule: f.message for f in session.findings}


# --- the rules on real training ---------------------------------------------------------------------------------
def test_an_overfitting_model_fires_overfit_then_overtraining_stops_it(tmp_path: Path) -> None:
    session = debugged("lgbm", prepared(tmp_path, noisy()), OVERFIT)
    found = {f.rule: f for f in session.findings}
    assert found["Overfit"].action == "alert" and found["Overtraining"].action == "stop"
    assert found["Overfit"].step < found["Overtraining"].step
    assert "rose 3 steps in a row" in found["Overfit"].message and "while training log-loss fell" in \
        found["Overfit"].message
    assert session.stopped == found["Overtraining"] and session.steps == found["Overtraining"].step < 30
    assert "has not improved by 0.1% for 10 steps" in found["Overtraining"].message


def test_overfit_with_action_stop_ends_the_training_at_its_step(tmp_path: Path) -> None:
    prep = prepared(tmp_path, noisy())
    session = debugged("lgbm", prep, OVERFIT, settings=configure(DebuggerSettings(), items=["Overfit=stop"]))
    assert session.stopped is not None and session.stopped.rule == "Overfit"
    assert session.steps == session.stopped.step < 10
    fam = get_family("lgbm")
    learner = fit(fam, {**fam.defaults, **OVERFIT}, prep, 1, 30,
                  debugger=Debugger(configure(DebuggerSettings(), items=["Overfit=stop"]), profile=False))
    assert learner.booster.current_iteration() == 10 * session.steps, "the model so far is kept"


def test_fit_runs_the_default_stop_rules_when_asked(tmp_path: Path) -> None:
    prep = prepared(tmp_path, noisy())
    lgbm = get_family("lgbm")
    config = {**lgbm.defaults, **OVERFIT}
    stopped = fit(lgbm, config, prep, 1, 30, debugger=True)
    assert stopped.booster.current_iteration() == 10 * 11, "Overtraining stops it 10 steps after its best, step 1"
    assert fit(lgbm, config, prep, 1, 30).booster.current_iteration() == 300


def test_a_clean_configuration_trains_to_the_end_with_no_stop_rule(tmp_path: Path) -> None:
    session = debugged("lgbm", prepared(tmp_path, synthetic(1500, seed=9)), {"learning_rate": 0.01})
    assert session.steps == 30 and session.stopped is None
    assert not {"Overfit", "Overtraining", "LossNotDecreasing"} & set(fired(session))
    assert [o.step for o in session.history] == list(range(1, 31))
    assert all(o.valid_loss > o.train_loss > 0 for o in session.history[5:])


def test_a_minority_class_of_three_percent_fires_class_imbalance_at_the_start(tmp_path: Path) -> None:
    frame = synthetic(1000, seed=2)
    frame["churned"] = (np.random.default_rng(3).random(1000) < 0.03).astype("int64")
    prep = prepared(tmp_path, frame)
    session = debugged("lgbm", prep, {}, iterations=2)
    [finding] = [f for f in session.findings if f.rule == "ClassImbalance"]
    assert finding.step == 0 and finding.action == "alert"
    share = prep.y["train"].mean()
    assert f"class '1' is {share:.1%} of the {len(prep.y['train'])} training rows" in finding.message
    stopped = debugged("lgbm", prep, {}, iterations=5, settings=configure(DebuggerSettings(),
                                                                           items=["ClassImbalance=stop"]))
    assert stopped.steps == 1, "a stop at the start ends the training after its first step"
    balanced = debugged("lgbm", prepared(tmp_path, synthetic(600), name="even"), {}, iterations=2)
    assert "ClassImbalance" not in fired(balanced)


def test_a_huge_learning_rate_kills_an_mlps_relus(tmp_path: Path) -> None:
    prep = prepared(tmp_path, synthetic(600))
    healthy = debugged("mlp", prep, {}, iterations=3)
    assert not {"DeadRelu", "VanishingGradient"} & set(fired(healthy))
    assert all(s.mean_abs_gradient and s.mean_abs_gradient > 1e-6 for s in healthy.history[-1].layers)
    broken = debugged("mlp", prep, {"learning_rate": 5.0}, iterations=3)
    assert "DeadRelu" in fired(broken)
    assert "ReLUs" in fired(broken)["DeadRelu"] and "output zero on every sampled training row" in \
        fired(broken)["DeadRelu"]


def test_a_negative_bias_leaves_dead_relus_and_vanishing_gradients(tmp_path: Path) -> None:
    prep = prepared(tmp_path, synthetic(600))
    mlp = get_family("mlp")
    learner = start(mlp, mlp.config({"layers": 2, "width": 16}), prep, 1)
    session = Debugger(profile=False)
    session.begin("mlp", learner, prep)
    learner.step()
    learner.model.intercepts_[0][:] = -1e3  # every unit of the first hidden layer below zero on every row
    assert not session.after_step(1, learner, last=True), "both rules alert by default"
    messages = fired(session)
    assert "hidden layer 1: 16 of 16 ReLUs (100%)" in messages["DeadRelu"]
    assert "layer 1 (16 units): mean |gradient| 0.00e+00" in messages["VanishingGradient"]
    assert "layer 2 (16 units): mean |gradient| 0.00e+00" in messages["VanishingGradient"]


@pytest.mark.parametrize("family, capped, free", [
    ("xgb", {"max_depth": 2}, {"max_depth": 10, "min_child_weight": 20}),
    ("lgbm", {"num_leaves": 4}, {"num_leaves": 128}),
])
def test_trees_that_reach_their_cap_fire_tree_depth(tmp_path: Path, family: str, capped: dict, free: dict) -> None:
    prep = prepared(tmp_path, synthetic(600))
    message = fired(debugged(family, prep, capped, iterations=5)).get("TreeDepth", "")
    cap = f"max_depth {capped['max_depth']}" if family == "xgb" else f"num_leaves {capped['num_leaves']}"
    assert f"of the inspected trees (5 of 5) reached {cap}" in message
    assert "TreeDepth" not in fired(debugged(family, prep, free, iterations=5))


@pytest.mark.parametrize("family", ["lgbm", "xgb"])
def test_a_feature_that_is_the_label_fires_feature_importance_overweight(tmp_path: Path, family: str) -> None:
    leaked = synthetic(600, seed=5).assign(leak=lambda f: f["churned"] * 1.0)
    message = fired(debugged(family, prepared(tmp_path, leaked, [*FEATURES, "leak"]), {}, iterations=5)).get(
        "FeatureImportanceOverweight", "")
    assert message.startswith("feature 'leak' holds") and "of the total gain, above 80%" in message
    honest = debugged(family, prepared(tmp_path, synthetic(600, seed=5), name="honest"), {}, iterations=5)
    assert "FeatureImportanceOverweight" not in fired(honest)


def test_rules_apply_only_where_they_mean_something(tmp_path: Path) -> None:
    from tests.bundled import diabetes_csv

    frame = pd.read_csv(diabetes_csv(tmp_path / "diabetes.csv"))
    features = [c for c in frame.columns if c not in ("patient", "target")]
    path = tmp_path / "diabetes.parquet"
    frame.assign(customer_id=frame["patient"]).to_parquet(path, index=False)
    path.with_name(path.name + ".json").write_text(json.dumps(
        {"features": features, "label": "target", "task": {"kind": "regression"}, "lineage": {}}))
    prep = prepare(load_training_set(path), seed=1)
    names = {"lgbm": set(), "mlp": set()}
    for family in names:
        session = debugged(family, prep, {}, iterations=3)
        names[family] = {r.name for r in session.active}
        assert session.loss == "RMSE" and all(o.train_loss > 1.0 for o in session.history), "RMSE in the label's units"
    assert names["lgbm"] == {"Overfit", "Overtraining", "LossNotDecreasing", "FeatureImportanceOverweight", "TreeDepth"}
    assert names["mlp"] == {"Overfit", "Overtraining", "LossNotDecreasing", "VanishingGradient", "DeadRelu"}


@pytest.mark.parametrize("family", ["lgbm", "xgb", "mlp"])
def test_the_debugger_leaves_the_model_as_it_would_be(tmp_path: Path, family: str) -> None:
    prep = prepared(tmp_path, synthetic(600))
    fam = get_family(family)
    alone = fit(fam, fam.config(), prep, 3, 4, debugger=False)
    watched = fit(fam, fam.config(), prep, 3, 4, debugger=Debugger(configure(DebuggerSettings(), items=[
        "overtraining=alert", "loss_not_decreasing=alert"]), profile=True))
    np.testing.assert_array_equal(alone.output(prep.x["test"]), watched.output(prep.x["test"]))


def test_a_sessions_state_survives_a_checkpoint(tmp_path: Path) -> None:
    prep = prepared(tmp_path, noisy())
    first = debugged("lgbm", prep, OVERFIT, iterations=6)
    assert "Overfit" in fired(first)
    again = Debugger(profile=False)
    again.restore(json.loads(json.dumps(first.state())))
    assert again.to_dict()["losses"] == first.to_dict()["losses"] and again.findings == first.findings
    lgbm = get_family("lgbm")
    learner = start(lgbm, {**lgbm.defaults, **OVERFIT}, prep, 1)
    again.begin("lgbm", learner, prep)
    for i in range(7, 9):
        learner.step()
        again.after_step(i, learner)
    assert [f.rule for f in again.findings].count("Overfit") == 1, "a rule fires once per training"
    assert [o.step for o in again.history] == list(range(1, 9))


def test_the_profiler_samples_cpu_and_memory_with_timestamps() -> None:
    profiler = Profiler(interval=0.05)
    profiler.start()
    end = time.monotonic() + 0.4
    while time.monotonic() < end:
        sum(i * i for i in range(10_000))  # keep a core busy
    summary = profiler.stop()
    seconds = [s.seconds for s in profiler.samples]
    assert summary.samples == len(seconds) >= 5 and seconds == sorted(seconds) and seconds[0] == 0.0
    assert summary.cpu_max is not None and summary.cpu_max > 20 and summary.rss_peak_mb > 10
    assert 0.35 < summary.seconds < 5


# --- a training run: MLflow, the report, the card ---------------------------------------------------------------
@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kiln.workspace import init_workspace

    root = tmp_path_factory.mktemp("debugger") / "ws"
    init_workspace(root)
    write_set(root / "noisy.parquet", noisy(), FEATURES)
    return root


def test_kiln_train_reports_the_findings_logs_them_and_the_card_shows_them(workspace: Path) -> None:
    from mlflow import MlflowClient

    from kiln.registry.card import render
    from kiln.registry.versions import get_version, register
    from kiln.workspace import open_workspace

    params = [a for k, v in OVERFIT.items() for a in ("-p", f"{k}={v}")]
    res = run_kiln("train", "-t", workspace / "noisy.parquet", "-f", "lgbm", *params, "-w", workspace)
    assert res.code == 0, res.stderr[-3000:]
    assert "debugger: " in res.stdout and "stopped at iteration" in res.stdout and "by Overtraining" in res.stdout
    assert "Overfit (alert) at iteration" in res.stdout and "validation log-loss rose" in res.stdout
    report = Path(res.stdout.split("debugger report: ")[1].split()[0])
    assert report.parent == workspace / "reports" / "debugger" / report.parent.name
    for png in ("losses.png", "profile.png"):
        assert (report.parent / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Overtraining" in report.read_text() and "losses.png" in report.read_text()

    run_id = report.parent.name
    c = MlflowClient(tracking_uri=f"sqlite:///{workspace}/models/mlflow.db")
    run = c.get_run(run_id)
    doc = json.loads(Path(c.download_artifacts(run_id, "debugger/findings.json", str(workspace))).read_text())
    assert run.data.tags["kiln.debugger_stopped"] == "Overtraining" == doc["stopped_by"]
    assert run.data.tags["kiln.debugger_findings"] == str(len(doc["findings"])) and len(doc["findings"]) >= 2
    assert run.data.metrics["debugger_findings"] == len(doc["findings"])
    assert doc["steps"] == doc["stopped_at"] < 30
    assert {r["name"]: r["params"] for r in doc["rules"]}["Overtraining"] == {"patience_validation": 10,
                                                                               "delta": 0.001}
    assert doc["profile"]["samples"] >= 2 and doc["profile"]["rss_peak_mb"] > 10
    logged = {a.path for a in c.list_artifacts(run_id, "debugger")}
    assert logged >= {"debugger/findings.json", "debugger/report.html", "debugger/losses.png", "debugger/profile.png"}
    steps = [m.step for m in c.get_metric_history(run_id, "valid_auc") if m.step]
    assert steps == list(range(1, doc["steps"] + 1)), "the run ends where the rule stopped it"

    ws = open_workspace(workspace)
    version = register(ws, "noisy", f"runs:/{run_id}/model", run_id, {}, {"passed": True, "reasons": []})
    card = render(ws, get_version(ws, f"noisy/{version.version}"))
    section = card.split("## Debugger")[1].split("## Limitations")[0]
    assert f"Training stopped at step {doc['stopped_at']} by Overtraining" in section
    assert "**Overfit** (alert)" in section and "Overtraining (stop)" in section and "peak resident memory" in section


# --- tuning ----------------------------------------------------------------------------------------------------
def test_a_tuning_trial_a_rule_stops_is_recorded(workspace: Path) -> None:
    import ray

    settings = workspace / "kiln.yaml"
    before = settings.read_text()
    settings.write_text(before + "debugger:\n  rules:\n    loss_not_decreasing:\n      num_steps: 1\n"
                                 "      diff_percent: 90\n")
    try:
        res = run_kiln("tune", "-t", workspace / "noisy.parquet", "-f", "lgbm", "-s", "random", "-n", "2", "-k", "2",
                       "--max-iterations", "5", "--no-register", "-w", workspace, "--json")
    finally:
        settings.write_text(before)
        ray.shutdown()
    assert res.code == 0, res.stderr[-3000:]
    tuned = json.loads(res.stdout)
    trials = [t for t in tuned["trials"] if t["source"] == "run"]
    assert len(trials) == 2
    for t in trials:
        assert t["debugger_stopped"] == "LossNotDecreasing" and t["iterations"] == 2 and t["stopped_early"]
        assert "over 1 steps" in t["debugger_stop_message"]
    recorded = json.loads((Path(tuned["folder"]) / "trials.json").read_text())
    assert {t["debugger_stopped"] for t in recorded} == {"LossNotDecreasing"}


# --- bad input -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("item, needle", [
    ("Dropout=stop", "unknown Debugger rule 'Dropout'"),
    ("Overfit=explode", "--rule 'Overfit=explode': unknown action 'explode'"),
    ("overtraining.patience_validation=0", "Overtraining.patience_validation: Input should be greater than or equal to 1"),
    ("dead_relu.threshold_layer=1.5", "DeadRelu.threshold_layer: Input should be less than or equal to 1"),
    ("TreeDepth.depth=3", "rule TreeDepth has no parameter 'depth'"),
    ("Overfit", "expected NAME=ACTION or NAME.PARAM=VALUE"),
])
def test_bad_rule_options_are_refused_by_name(item: str, needle: str) -> None:
    with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        configure(DebuggerSettings(), items=[item])


def test_rules_are_named_either_way_and_changed_by_options() -> None:
    settings = configure(DebuggerSettings(), enabled=False, items=["loss-not-decreasing=off", "Overfit.patience=5",
                                                                    "tree_depth=stop"])
    assert not settings.enabled and settings.rules.loss_not_decreasing.action == "off"
    assert settings.rules.overfit.patience == 5 and settings.rules.tree_depth.action == "stop"
    assert settings.rules.overtraining.action == "stop", "the others keep their defaults"


def test_kiln_train_refuses_a_bad_rule_before_training(workspace: Path) -> None:
    res = run_kiln("train", "-t", workspace / "noisy.parquet", "--rule", "Overtraining=later", "-w", workspace)
    assert res.code == 1 and "unknown action 'later'" in res.stderr


@pytest.mark.parametrize("yaml, key", [
    ("debugger:\n  rules:\n    overfit:\n      action: explode\n", "debugger.rules.overfit.action"),
    ("debugger:\n  rules:\n    overtraining:\n      patience_validation: 0\n",
     "debugger.rules.overtraining.patience_validation"),
    ("debugger:\n  rules:\n    dropout: {}\n", "debugger.rules.dropout"),
    ("debugger:\n  profiler_interval: -1\n", "debugger.profiler_interval"),
])
def test_bad_debugger_settings_are_refused_by_key(tmp_path: Path, yaml: str, key: str) -> None:
    (tmp_path / "kiln.yaml").write_text(yaml)
    with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
        load_settings(tmp_path)


def test_settings_without_a_debugger_section_load_with_its_defaults(tmp_path: Path) -> None:
    (tmp_path / "kiln.yaml").write_text("profile: local\n")
    debugger = load_settings(tmp_path).debugger
    assert debugger.enabled and debugger.profiler_interval == 0.5
    assert debugger.rules.overtraining.action == debugger.rules.loss_not_decreasing.action == "stop"
    assert {debugger.rules.overfit.action, debugger.rules.dead_relu.action, debugger.rules.tree_depth.action} == \
        {"alert"}
