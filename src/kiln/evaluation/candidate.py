"""Register a trained model as the challenger: evaluated against the champion on the same held-out rows first."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln import tracking
from kiln.errors import InputError
from kiln.evaluation.holdout import Evaluation, evaluate_candidate
from kiln.features.repo import open_store
from kiln.progress import Progress, no_progress
from kiln.registry.versions import NAME_RE, VersionInfo, champion_uri, register
from kiln.training.data import load_training_set
from kiln.training.split import split
from kiln.workspace import Workspace

LINEAGE_TAGS = ("kiln.family", "kiln.task", "kiln.label", "kiln.entity", "kiln.seed", "kiln.code_version", "kiln.dataset", "kiln.dataset_content_hash",
                "kiln.feature_service", "kiln.feature_views", "kiln.training_set", "kiln.training_set_sha256",
                "kiln.tuning_job")
GATE_FILE = "evaluation/gate.json"


def feature_service_version(ws: Workspace, service: str) -> str:
    """The ``kiln.version`` tag of the feature service, as registered in Feast."""

    try:
        return open_store(ws).get_feature_service(service).tags.get("kiln.version", "")
    except Exception:  # noqa: BLE001 - an unknown service has no version to record
        return ""


@dataclass
class Registration:
    """A registered version and the evaluation (against the champion, with the gate's decision) it was given."""

    version: VersionInfo
    evaluation: Evaluation

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "evaluation": self.evaluation.to_dict()}


def model_name_for_run(ws: Workspace, run_id: str) -> str:
    """The name a run's model is registered under when none is given: the name of the dataset it was trained on."""
    dataset: str = _get_run(ws, tracking.client(ws), run_id).data.tags.get("kiln.dataset", "")
    if not dataset or not NAME_RE.match(dataset):
        raise InputError(f"run {run_id} names no dataset to name its model after", hint="give the name (--name)")
    return dataset


def register_run_model(ws: Workspace, name: str | None, run_id: str, progress: Progress = no_progress,
                       model_uri: str | None = None) -> Registration:
    """Evaluate the model the run logged on its own held-out rows, then register it with alias challenger (under
    ``name``, or the dataset's name)."""
    name = name or model_name_for_run(ws, run_id)
    evaluation, model_uri = evaluate_run_model(ws, name, run_id, progress, model_uri)
    return Registration(register_evaluated(ws, name, run_id, model_uri, evaluation.to_dict()), evaluation)


def evaluate_run_model(ws: Workspace, name: str, run_id: str, progress: Progress = no_progress,
                       model_uri: str | None = None) -> tuple[Evaluation, str]:
    """Score the run's model (and ``name``'s champion) on the run's held-out rows and apply the gate.

    The result is logged with the run as evaluation/gate.json, where registration reads it.
    """

    _check_name(name)
    c = tracking.client(ws)
    run = _get_run(ws, c, run_id)
    tags = run.data.tags
    model_uri = model_uri or _logged_model_uri(c, run)
    data = load_training_set(Path(tags["kiln.training_set"]))
    if data.lineage["training_set_sha256"] != tags.get("kiln.training_set_sha256"):
        raise InputError(f"training set {data.path} changed since run {run_id} used it; its held-out rows are gone")
    holdout = split(data, int(tags.get("kiln.seed", "7"))).test
    champion = champion_uri(ws, name)
    progress(f"evaluating on {len(holdout)} held-out rows" + (f" against {champion}" if champion else ""))
    evaluation = evaluate_candidate(ws, data, holdout, model_uri, champion, progress=progress)
    c.log_dict(run_id, evaluation.to_dict(), GATE_FILE)
    return evaluation, model_uri


def register_evaluated(ws: Workspace, name: str, run_id: str, model_uri: str, evaluation: dict[str, Any],
                       extra_tags: dict[str, str] | None = None) -> VersionInfo:
    """Register ``model_uri`` with the run's lineage and the gate result of ``evaluation`` (as logged)."""

    _check_name(name)
    tags = _get_run(ws, tracking.client(ws), run_id).data.tags
    lineage = {k: tags[k] for k in LINEAGE_TAGS if k in tags}
    lineage["kiln.feature_service_version"] = feature_service_version(ws, tags.get("kiln.feature_service", ""))
    metric = evaluation.get("gate_metric", "auc")
    score = evaluation["challenger"].get(metric)
    lineage[f"kiln.test_{metric}"] = "" if score is None else f"{score:.4f}"
    return register(ws, name, model_uri, run_id, {**lineage, **(extra_tags or {})}, evaluation["gate"])


def logged_evaluation(ws: Workspace, run_id: str) -> dict[str, Any]:
    """The evaluation an earlier `evaluate_run_model` logged with the run."""
    import mlflow

    tracking.client(ws)
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{GATE_FILE}")
    except Exception:  # noqa: BLE001 - MLflow's not-found error
        raise InputError(f"run {run_id} has no {GATE_FILE}: evaluate it before registering it") from None


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise InputError(f"model name '{name}': use letters, digits, '.', '_' and '-'")


def _get_run(ws: Workspace, c: Any, run_id: str) -> Any:
    try:
        run = c.get_run(run_id)
    except Exception:  # noqa: BLE001 - MLflow's not-found error
        raise InputError(f"no MLflow run '{run_id}' in {ws.settings.mlflow.tracking_uri}") from None
    if "kiln.training_set" not in run.data.tags:
        raise InputError(f"run {run_id} was not made by `kiln train` or `kiln tune`: it names no training set")
    return run


def _logged_model_uri(c: Any, run: Any) -> str:
    """The newest model the run logged (MLflow 3 keeps models apart from runs)."""
    models = c.search_logged_models(experiment_ids=[run.info.experiment_id],
                                    filter_string=f"source_run_id = '{run.info.run_id}'")
    if not models:
        raise InputError(f"run {run.info.run_id} logged no model")
    newest = max(models, key=lambda m: m.creation_timestamp)
    return f"models:/{newest.model_id}"
