"""Model steps of a pipeline: tune, evaluate against the gate, register, explain."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kiln import tracking
from kiln.clarify.explain import explain
from kiln.errors import InputError
from kiln.evaluation.candidate import evaluate_run_model, logged_evaluation, register_evaluated
from kiln.registry.card import write_card
from kiln.registry.versions import APPROVED, get_version, set_approval
from kiln.settings import GateSettings
from kiln.tuning.job import TuneSpec, run_job
from kiln.workflow.data_steps import training_set_file
from kiln.workflow.result import StepResult, say, step
from kiln.workspace import Workspace, open_workspace

PIPELINE_RUN_TAG = "kiln.pipeline_run"
PIPELINE_RUN_ID_TAG = "kiln.pipeline_run_id"


def lineage(pipeline_run: str, pipeline_run_id: str) -> dict[str, str]:
    """The tags that tie MLflow runs and model versions to the pipeline run that made them."""
    return {k: v for k, v in ((PIPELINE_RUN_TAG, pipeline_run), (PIPELINE_RUN_ID_TAG, pipeline_run_id)) if v}


@step
def tune_step(workspace: str, training_set: str, model_out: str, family: str, strategy: str, trials: int,
              max_iterations: int, max_concurrent: int, seed: int, pipeline_run: str = "",
              pipeline_run_id: str = "", entry_point: str = "") -> StepResult:
    """Tune ``family`` (or the code of ``entry_point``) on the training set; the best model's files go to
    ``model_out``, its run in the metadata."""
    import mlflow

    ws = open_workspace(Path(workspace))
    spec = TuneSpec(family="entry" if entry_point else family, strategy=strategy, trials=trials,
                    max_concurrent=max_concurrent, seed=seed, training_set=str(training_set_file(training_set)),
                    max_iterations=max_iterations or None, entry_point=entry_point or None)
    result = run_job(ws, spec, say)
    c = tracking.client(ws)
    tags = lineage(pipeline_run, pipeline_run_id)
    runs = [result.parent_run_id, *(r.info.run_id for r in c.search_runs(
        [c.get_run(result.parent_run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'"))]
    for run_id in runs:
        for key, value in tags.items():
            c.set_tag(run_id, key, value)
    Path(model_out).mkdir(parents=True, exist_ok=True)
    mlflow.artifacts.download_artifacts(artifact_uri=result.model_uri, dst_path=model_out)
    metric = result.metric
    test = result.metrics["test"][metric]  # None when undefined on these rows (AUC with one class)
    say(f"best of {len(result.trials)} trials: valid {metric} {result.best['valid_score']:.4f}, test {metric} "
        + ("undefined" if test is None else f"{test:.4f}"))
    return StepResult(
        metrics={f"best_valid_{metric}": result.best["valid_score"], **({f"test_{metric}": test} if test is not None
                                                                        else {}),
                 "trials": len(result.trials), "stopped_early": sum(t["stopped_early"] for t in result.trials),
                 "trial_iterations": result.trial_iterations},
        metadata={"run_id": result.parent_run_id, "model_uri": result.model_uri, "family": spec.family,
                  "tuning_job": result.job, "training_set": spec.training_set, **tags},
        html=result.plot)


def _gated(ws: Workspace, min_auc: float | None, max_auc_drop: float | None) -> Workspace:
    """The workspace with the pipeline's gate thresholds in place of its settings' (checked as settings are)."""

    change = {k: v for k, v in (("min_auc", min_auc), ("max_auc_drop", max_auc_drop)) if v is not None}
    try:
        gates = GateSettings.model_validate({**ws.settings.gates.model_dump(), **change})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InputError(f"gate {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    return dataclasses.replace(ws, settings=ws.settings.model_copy(update={"gates": gates}))


@step
def evaluate_step(workspace: str, model_name: str, model: dict[str, Any], min_auc: float | None = None,
                  max_auc_drop: float | None = None) -> StepResult:
    """Score the tuned model and the champion on the same held-out rows; the value is whether the gate passed."""
    ws = _gated(open_workspace(Path(workspace)), min_auc, max_auc_drop)
    run_id, model_uri = _model_run(model)
    evaluation, _ = evaluate_run_model(ws, model_name, run_id, say, model_uri)
    decision = evaluation.decision
    assert decision is not None and evaluation.scores is not None  # evaluate_run_model always sets both
    say("gate passed" if decision.passed else "gate failed: " + "; ".join(decision.reasons))
    gate = ws.settings.gates.for_task(evaluation.task)
    champion = (evaluation.champion or {}).get("metrics", {})
    metrics = {f"test_{k}": v for k, v in evaluation.challenger.items() if v is not None}
    if champion.get(gate.metric) is not None:
        metrics[f"champion_test_{gate.metric}"] = champion[gate.metric]
    metrics["gate_passed"] = 1.0 if decision.passed else 0.0
    roc, confusion = _curves(evaluation)
    return StepResult(value=decision.passed, metrics=metrics, roc=roc, confusion=confusion,
                      markdown=_gate_markdown(workspace, model_name, run_id, evaluation.to_dict()))


def _curves(evaluation: Any) -> tuple[dict[str, list[float]] | None, dict[str, Any] | None]:
    """The ROC curve (binary) and the confusion matrix (classification) of the held-out scores, for the KFP UI."""
    import numpy as np
    from sklearn.metrics import confusion_matrix, roc_curve

    y, output = evaluation.scores
    classes = list(evaluation.classes)
    if evaluation.task == "regression":
        return None, None
    if evaluation.task == "multiclass":
        matrix = confusion_matrix(y, np.asarray(output).argmax(axis=1), labels=list(range(len(classes))))
        return None, {"categories": [str(c) for c in classes], "matrix": matrix.tolist()}
    fpr, tpr, thresholds = roc_curve(y, output)
    keep = range(0, len(fpr), max(1, len(fpr) // 200))  # the UI draws a few hundred points, not thousands
    predicted = (output >= evaluation.threshold).astype(int)
    return ({"fpr": [float(fpr[i]) for i in keep], "tpr": [float(tpr[i]) for i in keep],
             "threshold": [float(min(thresholds[i], 1.0)) for i in keep]},
            {"categories": [str(c) for c in classes], "matrix": confusion_matrix(y, predicted, labels=[0, 1]).tolist()})


def _gate_markdown(workspace: str, model_name: str, run_id: str, evaluation: dict[str, Any]) -> str:
    gate = evaluation["gate"]
    lines = [f"# Gate for {model_name} (run {run_id}): {'passed' if gate['passed'] else 'failed'}", "",
             "| check | value | limit | passed |", "| --- | --- | --- | --- |"]
    for check in gate["checks"]:
        value = "undefined" if check["value"] is None else f"{check['value']:.4f}"
        lines.append(f"| {check['name']} | {value} | {check['limit']} | {'yes' if check['passed'] else 'no'} |")
    out = Path(workspace) / "reports" / "gates" / f"{model_name}-{run_id}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return str(out)


def _model_run(model: dict[str, Any]) -> tuple[str, str]:
    run_id, model_uri = model.get("run_id"), model.get("model_uri")
    if not run_id or not model_uri:
        raise InputError("model artifact: its metadata names no run_id and model_uri (made by the tune step?)")
    return run_id, model_uri


@step
def register_step(workspace: str, model_name: str, model: dict[str, Any], approve: bool, pipeline_run: str = "",
                  pipeline_run_id: str = "") -> StepResult:
    """Register the evaluated model as ``model_name``@challenger; approve it when asked and the gate passed."""

    ws = open_workspace(Path(workspace))
    run_id, model_uri = _model_run(model)
    evaluation = logged_evaluation(ws, run_id)
    info = register_evaluated(ws, model_name, run_id, model_uri, evaluation, lineage(pipeline_run, pipeline_run_id))
    ref = f"{info.name}/{info.version}"
    if approve and info.gate == "passed":
        by = f"pipeline run {pipeline_run}" if pipeline_run else "pipeline"
        info = set_approval(ws, ref, APPROVED, "gate passed; the pipeline approves on passing", by=by)
    say(f"registered {ref} ({', '.join(info.aliases)}; {info.approval})")
    return StepResult(value=ref, metadata={"version": ref, "approval": info.approval, "gate": info.gate},
                      metrics={"version": float(info.version)})


@step
def explain_step(workspace: str, version: str, rows: int, seed: int) -> StepResult:
    """SHAP explanations of the version on its held-out rows, its bias by facet, and its model card."""

    ws = open_workspace(Path(workspace))
    explanation = explain(ws, version, rows=rows, seed=seed, progress=say)
    card = write_card(ws, version)
    say(f"top features: {', '.join(r['feature'] for r in explanation.global_importance[:3])}")
    metrics = {f"shap_{r['feature']}": r["mean_abs_shap"] for r in explanation.global_importance[:10]}
    run_id = get_version(ws, version).run_id
    for group in logged_evaluation(ws, run_id)["bias"] if run_id else []:
        metrics.update({f"{name}_{group['facet']}": value for name, value in group["metrics"].items()
                        if value is not None})
    return StepResult(metrics=metrics, html=explanation.report, markdown=card.markdown_path,
                      metadata={"model_card": card.html_path, "explanations": explanation.report})
