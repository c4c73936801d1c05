"""One training run: fit a family on a training set, evaluate it, log everything to MLflow."""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kiln.progress import Progress, no_progress
from kiln.settings import DebuggerSettings
from kiln.tracking import code_version, experiment_id
from kiln.training.data import TrainingData, load_training_set
from kiln.training.debugger import Debugger, DebuggerSummary, configure, start_report
from kiln.training.entry import EntryLearner, context_for, entry_family, load_entry_point
from kiln.training.families import get_family
from kiln.training.family import Family, Fitted
from kiln.training.metrics import Metrics, calibration_table, objective, task_metrics
from kiln.training.predictor import Predictor, save_model_folder
from kiln.training.prepare import Prepared, fit, prepare
from kiln.workspace import Workspace

MODEL_ARTIFACT = "model"


@dataclass
class DistributedRun:
    """How the job went: its workers, the rounds trained, and whether it resumed from a checkpoint."""

    job: str
    workers: int
    rounds: int  # boosting rounds the model holds
    checkpoint_every_rounds: int
    resumed_from_round: int  # 0: the last attempt started from scratch
    checkpoints: list[str]
    seconds: float  # the whole job: Ray, the workers' start, any restart, training
    train_seconds: float  # the last attempt's boosting, on rank 0's clock
    folder: str

    @property
    def rounds_per_second(self) -> float:
        """Boosting rounds a second while the workers trained (the rounds of the last attempt)."""
        return (self.rounds - self.resumed_from_round) / self.train_seconds if self.train_seconds else 0.0


@dataclass
class TrainResult:
    run_id: str
    experiment: str
    family: str
    task: dict[str, Any]  # {"kind": binary | multiclass | regression, "classes": [...]}
    config: dict[str, Any]
    iterations: int
    seed: int
    split: dict[str, Any]
    metrics: dict[str, dict[str, float | None]]  # "valid" / "test" -> metrics
    model_uri: str
    lineage: dict[str, Any] = field(default_factory=dict)
    distributed: DistributedRun | None = None  # a job of several workers (`kiln train --workers N`)
    debugger: DebuggerSummary | None = None  # None: the Debugger was off (or the model is the user's own code)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def experiment_name(data: TrainingData) -> str:
    """Runs are grouped by the feature service their training set came from."""
    return str(data.lineage.get("feature_service") or data.path.stem)


def lineage_tags(data: TrainingData, family: Family, seed: int) -> dict[str, str]:
    lin = data.lineage
    return {
        "kiln.family": family.name,
        "kiln.task": data.task.kind,
        "kiln.label": data.label,
        "kiln.entity": data.key or "",
        "kiln.seed": str(seed),
        "kiln.code_version": code_version(),
        "kiln.dataset": str(lin.get("dataset", "")),
        "kiln.dataset_content_hash": str(lin.get("dataset_content_hash", "")),
        "kiln.feature_service": str(lin.get("feature_service", "")),
        "kiln.feature_views": ",".join(lin.get("feature_views", [])),
        "kiln.training_set": str(data.path.resolve()),
        "kiln.training_set_sha256": str(lin.get("training_set_sha256", "")),
    }


def evaluate(learner: Fitted, prep: Prepared, threshold: float) -> dict[str, Metrics]:
    return {part: task_metrics(prep.task, prep.y[part], learner.output(prep.x[part]), threshold)
            for part in ("valid", "test")}


def log_evaluation(learner: Fitted, prep: Prepared, data: TrainingData,
                   metrics: dict[str, Metrics]) -> None:
    """Inside an active MLflow run: the held-out metrics, the calibration table (binary) and the split."""
    import mlflow

    for part, values in metrics.items():
        mlflow.log_metrics({f"{part}_{k}": v for k, v in values.items() if v is not None})
    if prep.task.kind == "binary":
        mlflow.log_dict({"calibration": calibration_table(prep.y["test"], learner.output(prep.x["test"]))},
                        "evaluation/calibration.json")
    mlflow.log_dict({"split": prep.summary(), "task": prep.task.to_dict(), "lineage": data.lineage},
                    "evaluation/training_set.json")


def log_trained_model(learner: Fitted, data: TrainingData, prep: Prepared, family: Family,
                      config: dict[str, Any], seed: int, threshold: float,
                      extra_meta: dict[str, Any] | None = None) -> str:
    """Inside an active MLflow run: log the model as a pyfunc (encoder + model file) and return its URI."""
    import mlflow
    from mlflow.models import infer_signature

    from kiln.training import pyfunc

    meta = {"family": family.name, "config": config, "seed": seed, "threshold": threshold,
            "features": data.features, "label": data.label, "key": data.key, "task": data.task.to_dict(),
            **(extra_meta or {})}
    with tempfile.TemporaryDirectory(prefix="kiln-model-") as tmp:
        folder = Path(tmp) / "model"
        save_model_folder(folder, learner, prep.encoder, meta)
        example = prep.split.valid[data.features].head(5).reset_index(drop=True)
        # Numeric inputs are declared as doubles: an expired feature arrives as a null, which integers cannot hold.
        numeric = [c for c in data.features if c not in data.categorical]
        example[numeric] = example[numeric].astype("float64")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MLflow's hint about integer columns: the inputs are doubles already
            signature = infer_signature(example, Predictor.load(folder).predict(example))
        info = mlflow.pyfunc.log_model(name=MODEL_ARTIFACT, python_model=pyfunc.__file__,
                                       artifacts={"model_folder": str(folder)}, signature=signature,
                                       input_example=example)
    model_uri: str = info.model_uri
    return model_uri


def debugger_settings(ws: Workspace, enabled: bool | None = None, rules: list[str] | None = None) -> \
        DebuggerSettings | None:
    """The workspace's Debugger settings with ``enabled`` and ``--rule`` items on top; None when it is off."""
    settings = configure(ws.settings.debugger, enabled, rules or [])
    return settings if settings.enabled else None


def train(ws: Workspace, training_set: Path, family_name: str, params: dict[str, Any] | None = None,
          seed: int = 7, iterations: int | None = None, threshold: float = 0.5,
          progress: Progress = no_progress, task: str | None = None, debugger: bool | None = None,
          rules: list[str] | None = None) -> TrainResult:
    """Fit, evaluate on validation and test, and log params, per-iteration metrics and the model to MLflow.

    ``task`` (binary, multiclass, regression) overrides the one the training set records. ``debugger`` switches
    the Debugger on or off (default: the settings' ``debugger.enabled``); ``rules`` change its rules
    (``NAME=ACTION`` or ``NAME.PARAM=VALUE``). A rule whose action is stop ends the training at that step.
    """
    import mlflow

    family = get_family(family_name)
    config = family.config(params)
    steps = iterations or family.max_iterations
    settings = debugger_settings(ws, debugger, rules)
    data = load_training_set(training_set, task)
    prep = prepare(data, seed)
    goal = objective(data.task)
    progress(f"{len(data.frame)} rows, {len(data.features)} features, {data.task.kind} task; {prep.split.method} "
             f"split {prep.split.sizes()}")
    name = experiment_name(data)
    exp = experiment_id(ws, name)
    with mlflow.start_run(experiment_id=exp, run_name=f"train-{family.name}",
                          tags=lineage_tags(data, family, seed)) as run:
        mlflow.log_params({**config, "family": family.name, "iterations": steps, "threshold": threshold,
                           "split": prep.split.method})
        done = 0

        def on_iteration(i: int, valid: Metrics) -> None:
            nonlocal done
            done = i
            score = valid[goal.metric]
            mlflow.log_metrics({f"valid_{goal.metric}": goal.missing() if score is None else score}, step=i)
            if i % 10 == 0 or i == steps:
                shown = "undefined" if score is None else f"{score:.4f}"
                progress(f"iteration {i}/{steps} ({family.unit} each): {goal.label} {shown}")

        session = Debugger(settings) if settings is not None else None
        learner = fit(family, config, prep, seed, steps, on_iteration, debugger=session or False)
        report = None
        if session is not None:
            if session.stopped is not None:
                progress(f"stopped at iteration {done} by the Debugger's {session.stopped.rule} rule: "
                         f"{session.stopped.message}")
            report = start_report(session, ws, run.info.run_id, f"Debugger: {name}, {family.name}, run "
                                                                f"{run.info.run_id}")
        metrics = evaluate(learner, prep, threshold)
        log_evaluation(learner, prep, data, metrics)
        progress("logging the model")
        model_uri = log_trained_model(learner, data, prep, family, config, seed, threshold)
        found = report.finish() if report is not None else None
        if found is not None and found.plot_problem:
            progress(f"the Debugger's plots are missing: {found.plot_problem}")
    return TrainResult(run_id=run.info.run_id, experiment=name, family=family.name, task=data.task.to_dict(),
                       config=config,
                       iterations=done, seed=seed, split=prep.summary(), metrics=metrics, model_uri=model_uri,
                       lineage=json.loads(json.dumps(data.lineage, default=str)), debugger=found)


def train_entry_point(ws: Workspace, training_set: Path, entry_path: Path, params: dict[str, Any] | None = None,
                      seed: int = 7, threshold: float = 0.5, progress: Progress = no_progress,
                      task: str | None = None) -> TrainResult:
    """`train` with the user's own code: its train(context) fits the model, Kiln scores, logs and saves it as it
    does the built-in families' (the file's predict() answers for it)."""
    import mlflow

    entry = load_entry_point(entry_path)
    family = entry_family(entry)
    config = entry.config(params)
    data = load_training_set(training_set, task)
    prep = prepare(data, seed)
    goal = objective(data.task)
    progress(f"{len(data.frame)} rows, {len(data.features)} features, {data.task.kind} task; {prep.split.method} "
             f"split {prep.split.sizes()}; training with {entry.path}")
    with mlflow.start_run(experiment_id=experiment_id(ws, experiment_name(data)), run_name=f"train-{entry.name}",
                          tags={**lineage_tags(data, family, seed), "kiln.entry_point": str(entry.path)}) as run:
        mlflow.log_params({**config, "family": family.name, "entry_point": entry.path.name, "threshold": threshold,
                           "split": prep.split.method})
        reported = []

        def on_report(iteration: int, model: Any) -> None:
            score = task_metrics(data.task, prep.y["valid"], EntryLearner(entry, model, data.task).output(
                prep.x["valid"]))[goal.metric]
            reported.append(iteration)
            mlflow.log_metrics({f"valid_{goal.metric}": goal.missing() if score is None else score}, step=iteration)
            progress(f"iteration {iteration}: {goal.label} {'undefined' if score is None else f'{score:.4f}'}")

        learner = EntryLearner(entry, entry.train(context_for(prep, entry, config, seed, on_report)), data.task)
        metrics = evaluate(learner, prep, threshold)
        log_evaluation(learner, prep, data, metrics)
        progress(f"logging the model ({learner.flavor} flavor)")
        model_uri = log_trained_model(learner, data, prep, family, config, seed, threshold, learner.meta())
    return TrainResult(run_id=run.info.run_id, experiment=experiment_name(data), family=family.name,
                       task=data.task.to_dict(), config=config, iterations=len(reported), seed=seed,
                       split=prep.summary(), metrics=metrics, model_uri=model_uri,
                       lineage=json.loads(json.dumps(data.lineage, default=str)))
