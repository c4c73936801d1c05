"""The main job: Kiln's lifecycle end to end on the local embedded default.

Each capability adds its step here, so `kiln demo` always shows the platform as far as it is
built. Every step reports what it made; the summary says how long each took.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from kiln.errors import EnvironmentProblem

DEMO_CUSTOMERS = 2000
DEMO_DAYS = 120
DEMO_SEED = 7
DEMO_TRIALS = 9
DEMO_MAX_ITERATIONS = 9
DEMO_MODEL = "churn"
DEMO_ENDPOINT = "churn"
DEMO_REPLAY_ROWS = 400
DEMO_MONITOR_ROWS = 800
# The second half of the monitored traffic: customers using far less than the model was trained on.
DEMO_DRIFT = {"usage_minutes_7d_mean": -1.5, "usage_minutes_30d_mean": -1.5}


@dataclass
class StepResult:
    name: str
    seconds: float
    outputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DemoContext:
    root: Path
    dataset: Path | None = None
    training_set: Path | None = None
    tuning_run: str | None = None
    model_uri: str | None = None
    version: str | None = None
    challenger: str | None = None
    results: list[StepResult] = field(default_factory=list)
    progress: Callable[[str], None] = lambda _: None


def _environment(ctx: DemoContext) -> dict[str, Any]:
    """Engines installed (versions read, not imported: `kiln doctor` imports them), disk and stores."""
    from importlib.metadata import PackageNotFoundError, version

    from kiln.doctor import ENGINES, check_disk, check_services
    from kiln.settings import load_settings

    versions, missing = {}, []
    for _, dist, _ in ENGINES:
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            missing.append(dist)
    problems = [c for c in [*check_services(load_settings(ctx.root)), check_disk(ctx.root)] if not c.ok]
    if missing or problems:
        lines = [f"{d}: not installed" for d in missing] + [f"{c.name}: {c.detail}" for c in problems]
        raise EnvironmentProblem("environment check failed:\n  " + "\n  ".join(lines), hint="run `kiln doctor` for details")
    return {"engines": versions}


def _workspace(ctx: DemoContext) -> dict[str, Any]:
    from kiln.workspace import init_workspace

    ws, created = init_workspace(ctx.root)
    return {"workspace": str(ws.root), "created": len(created)}


def _generate(ctx: DemoContext) -> dict[str, Any]:
    from kiln.data.dataset import staged_dataset, write_dataset
    from kiln.data.generate import GenerateOptions, generate_churn
    from kiln.data.schema import CHURN_SCHEMA

    ctx.dataset = ctx.root / "data" / "churn"
    opts = GenerateOptions(customers=DEMO_CUSTOMERS, days=DEMO_DAYS, seed=DEMO_SEED,
                           end=datetime.now(timezone.utc).date())
    with staged_dataset(ctx.dataset, overwrite=True) as stage:
        frames, stats = generate_churn(opts)
        manifest = write_dataset(stage, "churn", CHURN_SCHEMA, frames,
                                 {"generator": "kiln.data.generate", "customers": opts.customers, "days": opts.days,
                                  "seed": opts.seed, "end": str(opts.end)}, stats)
    return {"dataset": str(ctx.dataset), "customers": stats["customers"], "events": stats["events"],
            "labels": stats["labels"], "churn_rate": stats["churn_rate"], "content_hash": manifest["content_hash"]}


def _validate(ctx: DemoContext) -> dict[str, Any]:
    from kiln.data.validate import validate_dataset

    if ctx.dataset is None:
        raise EnvironmentProblem("no dataset to validate: the generate step did not run")
    report = validate_dataset(ctx.dataset)
    return {"valid": True, "tables": report.tables}


def _ingest(ctx: DemoContext) -> dict[str, Any]:
    from kiln.features.ingest import ingest
    from kiln.workspace import open_workspace

    if ctx.dataset is None:
        raise EnvironmentProblem("no dataset to ingest: the generate step did not run")
    report = ingest(open_workspace(ctx.root), ctx.dataset)
    return {"feature_service": report.feature_service, "offline_rows": report.offline_rows,
            "online_entities": report.online_rows}


def _materialize(ctx: DemoContext) -> dict[str, Any]:
    """Rebuild the online store from the offline history, as a cluster's schedule would."""
    from kiln.features.materialize import materialize
    from kiln.workspace import open_workspace

    end = datetime.now(timezone.utc)
    return materialize(open_workspace(ctx.root), end - timedelta(days=DEMO_DAYS + 1), end)


def _training_set(ctx: DemoContext) -> dict[str, Any]:
    from kiln.features.training import build_training_set
    from kiln.workspace import open_workspace

    if ctx.dataset is None:
        raise EnvironmentProblem("no dataset for labels: the generate step did not run")
    out = ctx.root / "data" / "churn_training_set.parquet"
    result = build_training_set(open_workspace(ctx.root), ctx.dataset, "churn_v1", out)
    ctx.training_set = out
    return {"training_set": result.path, "rows": result.rows, "features": len(result.features),
            "label_rate": result.label_rate}


def _tune(ctx: DemoContext) -> dict[str, Any]:
    from kiln.tuning.job import TuneSpec, run_job
    from kiln.workspace import open_workspace

    if ctx.training_set is None:
        raise EnvironmentProblem("no training set to tune on: the training-set step did not run")
    spec = TuneSpec(family="lgbm", strategy="hyperband", trials=DEMO_TRIALS, max_concurrent=2, seed=DEMO_SEED,
                    training_set=str(ctx.training_set), max_iterations=DEMO_MAX_ITERATIONS)
    result = run_job(open_workspace(ctx.root), spec, ctx.progress)
    ctx.tuning_run, ctx.model_uri = result.parent_run_id, result.model_uri
    return {"job": result.job, "trials": len(result.trials),
            "stopped_early": sum(t["stopped_early"] for t in result.trials),
            "trial_iterations": result.trial_iterations, "best_valid_auc": round(result.best["valid_auc"], 4),
            "test_auc": round(result.metrics["test"]["auc"], 4), "mlflow_run": result.parent_run_id,
            "objective_plot": result.plot}


def _register(ctx: DemoContext) -> dict[str, Any]:
    from kiln.registry.candidate import register_run_model
    from kiln.workspace import open_workspace

    if ctx.tuning_run is None:
        raise EnvironmentProblem("no tuned model to register: the tuning step did not run")
    version, evaluation = register_run_model(open_workspace(ctx.root), DEMO_MODEL, ctx.tuning_run, ctx.progress,
                                             model_uri=ctx.model_uri)
    ctx.version = f"{version.name}/{version.version}"
    champion = (evaluation.champion or {}).get("metrics", {}).get("auc")
    return {"model": ctx.version, "aliases": ",".join(version.aliases), "approval": version.approval,
            "gate": version.gate, "gate_reasons": "; ".join(evaluation.decision.reasons) or "-",
            "champion_auc_same_rows": round(champion, 4) if champion else "no champion yet"}


def _explain_and_card(ctx: DemoContext) -> dict[str, Any]:
    from kiln.clarify.explain import explain
    from kiln.registry.card import write_card
    from kiln.workspace import open_workspace

    if ctx.version is None:
        raise EnvironmentProblem("no registered version to explain: the register step did not run")
    ws = open_workspace(ctx.root)
    explanation = explain(ws, ctx.version, rows=200, seed=DEMO_SEED, progress=ctx.progress)
    card = write_card(ws, ctx.version)
    top = ", ".join(r["feature"] for r in explanation.global_importance[:3])
    return {"top_features": top, "explanations": explanation.report, "model_card": card.html_path}


def _champion_and_challenger(ctx: DemoContext) -> dict[str, Any]:
    from kiln.registry.candidate import register_run_model
    from kiln.registry.versions import APPROVED, promote, set_approval
    from kiln.training.run import train
    from kiln.workspace import open_workspace

    if ctx.version is None or ctx.training_set is None:
        raise EnvironmentProblem("no registered version to promote: the register step did not run")
    ws = open_workspace(ctx.root)
    set_approval(ws, ctx.version, APPROVED, "reviewed in the demo", by="kiln demo")
    promote(ws, ctx.version, by="kiln demo")
    result = train(ws, ctx.training_set, "mlp", seed=DEMO_SEED, progress=ctx.progress)
    version, evaluation = register_run_model(ws, DEMO_MODEL, result.run_id, ctx.progress, model_uri=result.model_uri)
    ctx.challenger = f"{version.name}/{version.version}"
    return {"champion": ctx.version, "challenger": ctx.challenger, "challenger_family": "mlp",
            "challenger_test_auc": round(result.metrics["test"]["auc"], 4), "challenger_gate": version.gate}


def _compile_and_publish(ctx: DemoContext) -> dict[str, Any]:
    from kiln.compile.compiler import CompileOptions, compile_version
    from kiln.compile.store import publish_artifact
    from kiln.workspace import open_workspace

    ws = open_workspace(ctx.root)
    out: dict[str, Any] = {}
    for target in ("x86_64", "aarch64", "cuda"):
        result = compile_version(ws, f"{DEMO_MODEL}@champion", CompileOptions(target=target), ctx.progress)
        out[target] = result.id
        if result.parity:
            out["x86_64_parity_max_abs_diff"] = f"{result.parity['max_abs_diff']:.1e}"
        if target != "cuda":  # devices pull CPU builds; the CUDA build is for GPU hosts, inspected here
            publish_artifact(ws, result.id)
    out["published"] = "x86_64, aarch64 (served by `kiln up` for `kiln-edge run`)"
    out["bundles"] = str(ws.folder("artifacts") / "compiled")
    return out


def _deploy_with_shadow(ctx: DemoContext) -> dict[str, Any]:
    from kiln.serving.local import delete, deploy, list_endpoints
    from kiln.serving.spec import parse_spec
    from kiln.workspace import open_workspace

    ws = open_workspace(ctx.root)
    if DEMO_ENDPOINT in list_endpoints(ws):
        delete(ws, DEMO_ENDPOINT)  # a demo run again in the same workspace starts its endpoint afresh
    spec = parse_spec({
        "name": DEMO_ENDPOINT,
        "variants": [{"name": "primary", "model": f"models:/{DEMO_MODEL}@champion"}],
        # The challenger is an MLP: its shadow runs its ONNX graph on ONNX Runtime alone.
        "shadow": {"name": "shadow", "model": f"models:/{DEMO_MODEL}@challenger", "runtime": "onnx",
                   "sample_percent": 100},
        "policy": {"type": "canary", "step_percent": 20, "bake_seconds": 8},
        "guardrails": {"min_requests": 10},
        "capture": {"flush_seconds": 0.5},
    }, "demo endpoint")
    state = deploy(ws, spec, ctx.progress)
    return {"endpoint": f"{state['url']}/v1/models/{DEMO_ENDPOINT}:predict",
            "primary": state["variants"]["primary"]["model"],
            "shadow": state["variants"]["shadow"]["model"], "shadow_runtime": state["variants"]["shadow"]["runtime"]}


def _replay_and_compare(ctx: DemoContext) -> dict[str, Any]:
    from kiln.serving.local import compare_shadow
    from kiln.serving.replay import replay
    from kiln.workspace import open_workspace

    ws = open_workspace(ctx.root)
    sent = replay(ws, DEMO_ENDPOINT, ctx.training_set, limit=DEMO_REPLAY_ROWS, rps=100, progress=ctx.progress)
    time.sleep(1.5)  # the capture writer flushes every 0.5 s; shadow answers land just after production's
    shadow = compare_shadow(ws, DEMO_ENDPOINT)
    return {"requests": sent["rows"], "statuses": sent["statuses"], "p99_ms": sent["p99_ms"],
            "shadow_compared": shadow["requests"], "label_agreement": shadow["label_agreement"],
            "mean_abs_probability_diff": shadow["probability_mean_abs_diff"], "sent_log": sent["log"]}


def _canary(ctx: DemoContext) -> dict[str, Any]:
    import threading

    from kiln.serving.local import endpoint_status, update
    from kiln.serving.replay import replay
    from kiln.workspace import open_workspace

    ws = open_workspace(ctx.root)
    traffic: dict[str, Any] = {}
    # Live traffic during the rollout, so the guardrails judge the canary on real answers.
    feeder = threading.Thread(target=lambda: traffic.update(replay(ws, DEMO_ENDPOINT, ctx.training_set,
                                                                   limit=DEMO_REPLAY_ROWS * 2, rps=40)))
    feeder.start()
    try:
        rollout = update(ws, DEMO_ENDPOINT, f"models:/{DEMO_MODEL}@challenger", progress=ctx.progress)
    finally:
        feeder.join()
    status = endpoint_status(ws, DEMO_ENDPOINT)
    return {"phase": rollout["phase"], "steps": " -> ".join(h["reason"].split(":")[0] for h in rollout["history"]),
            "reason": rollout["reason"], "primary_now": status["variants"]["primary"]["model"],
            "requests_during_rollout": traffic.get("rows"), "statuses": traffic.get("statuses"),
            "stop_with": f"kiln endpoint delete {DEMO_ENDPOINT} (or kiln down)"}


def _monitor(ctx: DemoContext) -> dict[str, Any]:
    import pandas as pd

    from kiln.monitoring.labels import ingest_labels
    from kiln.monitoring.run import run_monitor
    from kiln.monitoring.simulate import drift_halfway
    from kiln.serving.replay import replay
    from kiln.workspace import open_workspace

    if ctx.training_set is None:
        raise EnvironmentProblem("no training set to draw traffic from: the training-set step did not run")
    ws = open_workspace(ctx.root)
    start = datetime.now(timezone.utc)
    rows = pd.read_parquet(ctx.training_set).tail(DEMO_MONITOR_ROWS)
    traffic = ctx.root / "data" / "monitor_traffic.parquet"
    drift_halfway(rows, DEMO_DRIFT, seed=DEMO_SEED).to_parquet(traffic, index=False)
    ctx.progress(f"traffic whose second half drifts: {', '.join(DEMO_DRIFT)} moved by -1.5 deviations")
    sent = replay(ws, DEMO_ENDPOINT, traffic, rps=200, progress=ctx.progress)
    time.sleep(1.5)  # the capture writer flushes every 0.5 s
    ingest_labels(ws, DEMO_ENDPOINT, Path(sent["log"]))  # the replay log holds each request's true label
    result = run_monitor(ws, DEMO_ENDPOINT, since=start, progress=ctx.progress)
    found = [f"{v['monitor']}: {v['feature']} {v['metric']} {v['observed']} (threshold {v['threshold']})"
             for v in result["violations"]]
    monitors = result["monitors"]
    quality = monitors["model_quality"].get("observed") or {}
    return {"requests": result["records"], "model": result["model"], "status": result["status"],
            "violations": len(found), **{f"violation {i}": text for i, text in enumerate(found, 1)},
            "drifted_features": ", ".join(monitors["data_drift"].get("drifted", [])) or "none",
            "live_auc": round(quality["roc_auc"], 4) if quality.get("roc_auc") else "-",
            "attribution_ndcg": monitors["attribution_drift"].get("ndcg", "-"),
            "report": result["report"], "violations_file": result["violations_file"],
            "history": "`kiln up`, then Evidently's UI at "
                       f"http://{ws.settings.services.evidently.host}:{ws.settings.services.evidently.port}"}


STEPS: list[tuple[str, Callable[[DemoContext], dict[str, Any]]]] = [
    ("check the environment", _environment),
    ("create the workspace", _workspace),
    ("generate churn data", _generate),
    ("validate the dataset", _validate),
    ("ingest features (Feast)", _ingest),
    ("materialize the online store", _materialize),
    ("build a point-in-time training set", _training_set),
    ("tune LightGBM with Hyperband (Ray Tune; trials in MLflow)", _tune),
    ("register the best model as challenger, behind the gate (MLflow)", _register),
    ("explain it (SHAP) and write its model card", _explain_and_card),
    ("promote it to champion; train and register an MLP challenger", _champion_and_challenger),
    ("compile the champion for x86_64, aarch64 and CUDA (TVM); sign and publish", _compile_and_publish),
    ("deploy the champion as an endpoint, the challenger as its shadow (KServe)", _deploy_with_shadow),
    ("replay traffic through it and compare the shadow", _replay_and_compare),
    ("roll the challenger out by canary under guardrails", _canary),
    ("monitor traffic that drifts halfway: data, quality, bias, attribution (Evidently)", _monitor),
]


def run_demo(root: Path, on_step: Callable[[int, int, str], None] = lambda i, n, name: None,
             progress: Callable[[str], None] = lambda _: None) -> DemoContext:
    """Run every step in order; an error stops the run and propagates with its own message."""
    ctx = DemoContext(root=root.expanduser().resolve(), progress=progress)
    for i, (name, step) in enumerate(STEPS, 1):
        on_step(i, len(STEPS), name)
        t0 = time.perf_counter()
        outputs = step(ctx)
        ctx.results.append(StepResult(name, time.perf_counter() - t0, outputs))
    return ctx
