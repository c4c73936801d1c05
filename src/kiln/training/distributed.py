"""Distributed training (SageMaker's distributed training and managed spot training's checkpoints): XGBoost or
LightGBM data-parallel over N Ray Train workers, locally or on the Ray cluster ``ray.address`` names.

Each worker trains on its shard with the library's own data-parallel mode (XGBoost's collective, LightGBM's
``tree_learner: data_parallel``); a checkpoint is written every few iterations. A worker that dies is replaced and the
job goes on from the newest checkpoint; a job that stops as a whole (Ctrl-C, a lost machine) is finished with
`kiln train --resume JOB`. The model is an ordinary model of its family: registered, explained, served and compiled
like one trained on one core.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kiln import tracking
from kiln.errors import InputError, Interrupted, KilnError
from kiln.files import write_json_atomic
from kiln.progress import Progress, no_progress
from kiln.training.data import load_training_set
from kiln.training.distributed_worker import RESUMED_FROM, TRAIN_SECONDS, WorkerSpec, train_worker
from kiln.training.families import get_family
from kiln.training.lgbm import LGBM_ROUNDS_PER_ITERATION, LgbmModel, lgbm_params
from kiln.training.prepare import prepare
from kiln.training.ray_runtime import ray_session
from kiln.training.run import (
    DistributedRun,
    TrainResult,
    evaluate,
    experiment_name,
    lineage_tags,
    log_evaluation,
    log_trained_model,
)
from kiln.training.xgb import XGB_ROUNDS_PER_ITERATION, XgbModel, xgb_params
from kiln.workspace import Workspace

ROUNDS_PER_ITERATION = {"xgb": XGB_ROUNDS_PER_ITERATION, "lgbm": LGBM_ROUNDS_PER_ITERATION}
MAX_RESTARTS = 3  # workers lost in one job before it gives up


class DistributedTrainingFailed(KilnError):
    """The workers failed more often than the job allows, or for a reason a restart cannot mend."""


class DistributedInterrupted(Interrupted):
    """The job stopped part way; its checkpoints remain for `kiln train --resume`."""


@dataclass(frozen=True)
class DistributedSpec:
    training_set: str
    family: str
    workers: int
    params: dict[str, Any]
    seed: int = 7
    iterations: int | None = None
    threshold: float = 0.5
    task: str | None = None
    checkpoint_every: int = 5  # iterations between checkpoints


def jobs_root(ws: Workspace) -> Path:
    return ws.folder("training")


def check_spec(spec: DistributedSpec) -> None:
    if spec.family not in ROUNDS_PER_ITERATION:
        raise InputError(f"distributed training takes the families {', '.join(ROUNDS_PER_ITERATION)}; "
                         f"'{spec.family}' trains on one worker", hint="drop --workers, or choose --family xgb")
    if spec.workers < 1:
        raise InputError(f"--workers must be at least 1; got {spec.workers}")
    if spec.checkpoint_every < 1:
        raise InputError(f"--checkpoint-every must be at least 1 iteration; got {spec.checkpoint_every}")


def train_distributed(ws: Workspace, spec: DistributedSpec, progress: Progress = no_progress) -> TrainResult:
    """Start a distributed training job and log it to MLflow as `kiln train` does."""
    check_spec(spec)
    get_family(spec.family).config(spec.params)
    load_training_set(Path(spec.training_set), spec.task)  # a bad training set is named before the job exists
    job = f"train-{spec.family}-{spec.workers}w-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    folder = jobs_root(ws) / job
    folder.mkdir(parents=True, exist_ok=False)
    return _run(ws, folder, {"job": job, "spec": asdict(spec), "status": "running"}, progress)


def resume_distributed(ws: Workspace, job: str, progress: Progress = no_progress) -> TrainResult:
    """Finish a job that stopped: the workers start again from its newest checkpoint, into the same MLflow run."""
    path = jobs_root(ws) / job / "job.json"
    if not path.is_file():
        known = sorted(p.parent.name for p in jobs_root(ws).glob("*/job.json"))
        raise InputError(f"no distributed training job '{job}' in {jobs_root(ws)}",
                         hint=f"jobs: {', '.join(known) or 'none yet'}")
    record = json.loads(path.read_text())
    if record["status"] == "completed":
        raise InputError(f"training job {job} already finished (MLflow run {record.get('run_id')})")
    progress(f"resuming job {job}")
    return _run(ws, path.parent, record, progress)


def _run(ws: Workspace, folder: Path, record: dict[str, Any], progress: Progress) -> TrainResult:
    import mlflow
    import ray

    spec = DistributedSpec(**record["spec"])
    family = get_family(spec.family)
    config = family.config(spec.params)
    per_iteration = ROUNDS_PER_ITERATION[spec.family]
    iterations = spec.iterations or family.max_iterations
    data = load_training_set(Path(spec.training_set), spec.task)
    if record.get("training_set_sha256", data.lineage["training_set_sha256"]) != data.lineage["training_set_sha256"]:
        raise InputError(f"training job {record['job']}: its training set {spec.training_set} changed since it began")
    prep = prepare(data, spec.seed)
    params = (xgb_params if spec.family == "xgb" else lgbm_params)(config, spec.seed, data.task)
    name = experiment_name(data)
    tags = {**lineage_tags(data, family, spec.seed), "kiln.distributed_job": record["job"],
            "kiln.distributed_workers": str(spec.workers)}
    tracking.client(ws)  # points mlflow at the workspace's tracking server
    resuming = {"run_id": record["run_id"]} if "run_id" in record else {
        "experiment_id": tracking.experiment_id(ws, name), "run_name": f"train-{family.name}-{spec.workers}w",
        "tags": tags}
    with mlflow.start_run(**resuming) as run:
        if "run_id" not in record:
            mlflow.log_params({**config, "family": family.name, "iterations": iterations, "workers": spec.workers,
                               "threshold": spec.threshold, "split": prep.split.method})
            record.update(run_id=run.info.run_id, training_set_sha256=data.lineage["training_set_sha256"],
                          started_at=datetime.now(UTC).isoformat(timespec="seconds"))
            write_json_atomic(folder / "job.json", record)
        progress(f"job {record['job']}: {family.name} on {spec.workers} workers, {len(prep.y['train'])} training rows, "
                 f"{iterations} iterations of {per_iteration} rounds, a checkpoint every {spec.checkpoint_every}; "
                 f"MLflow run {run.info.run_id}")
        started = time.monotonic()
        with ray_session(ws):
            worker_spec = WorkerSpec(
                family=spec.family, params=params, rounds=iterations * per_iteration,
                rounds_per_iteration=per_iteration, checkpoint_rounds=spec.checkpoint_every * per_iteration,
                task=data.task.to_dict(), rows=ray.put((prep.x["train"], prep.y["train"])),
                valid=ray.put((prep.x["valid"], prep.y["valid"])), tracking_uri=ws.settings.mlflow.tracking_uri,
                run_id=run.info.run_id)
            result = _fit(spec, worker_spec, folder, record["job"])
            model = _model(spec.family, result.checkpoint)
        seconds = time.monotonic() - started
        resumed = int(result.metrics.get(RESUMED_FROM, 0))
        rounds = iterations * per_iteration
        if resumed:
            progress(f"the job resumed from its checkpoint at round {resumed} of {rounds}")
        metrics = evaluate(model, prep, spec.threshold)
        log_evaluation(model, prep, data, metrics)
        report = DistributedRun(
            job=record["job"], workers=spec.workers, rounds=model.rounds(),
            checkpoint_every_rounds=worker_spec.checkpoint_rounds,
            resumed_from_round=resumed, checkpoints=sorted(p.name for p in (folder / "ray").glob("*/checkpoint_*") if p.is_dir()),
            seconds=round(seconds, 2), train_seconds=round(float(result.metrics.get(TRAIN_SECONDS, seconds)), 3),
            folder=str(folder))
        mlflow.log_dict(asdict(report), "distributed/job.json")
        mlflow.log_metrics({"distributed_seconds": seconds, "distributed_resumed_from_round": resumed})
        progress("logging the model")
        model_uri = log_trained_model(model, data, prep, family, config, spec.seed, spec.threshold,
                                      {"distributed": {"workers": spec.workers, "job": record["job"]}})
    record.update(status="completed", finished_at=datetime.now(UTC).isoformat(timespec="seconds"))
    write_json_atomic(folder / "job.json", record)
    return TrainResult(run_id=run.info.run_id, experiment=name, family=family.name, task=data.task.to_dict(),
                       config=config, iterations=iterations, seed=spec.seed, split=prep.summary(), metrics=metrics,
                       model_uri=model_uri, lineage=json.loads(json.dumps(data.lineage, default=str)),
                       distributed=report)


def _fit(spec: DistributedSpec, worker_spec: WorkerSpec, folder: Path, job: str) -> Any:
    """Ray Train's data-parallel trainer for the family; the same name and folder resume a stopped job."""
    import ray.train

    trainer_class: Any
    if spec.family == "xgb":
        from ray.train.xgboost import XGBoostTrainer as trainer_class
    else:
        from ray.train.lightgbm import LightGBMTrainer as trainer_class
    trainer = trainer_class(
        train_worker, train_loop_config={"spec": worker_spec},
        scaling_config=ray.train.ScalingConfig(num_workers=spec.workers, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(
            name=job, storage_path=str((folder / "ray").resolve()),
            failure_config=ray.train.FailureConfig(max_failures=MAX_RESTARTS),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)),
    )
    try:
        result = _fit_in_thread(trainer)
    except KeyboardInterrupt:
        raise DistributedInterrupted(f"training job {job} was interrupted",
                                     hint=f"finish it from its newest checkpoint with `kiln train --resume {job}`") \
            from None
    except ray.train.TrainingFailedError as exc:
        raise DistributedTrainingFailed(f"training job {job} failed: {exc}",
                                        hint=f"its checkpoints stay in {folder}; `kiln train --resume {job}` goes on "
                                             "from the newest") from None
    if result.checkpoint is None:
        raise DistributedTrainingFailed(f"training job {job} ended without a checkpoint")
    return result


def _fit_in_thread(trainer: Any) -> Any:
    """trainer.fit() in a thread of its own: in the main thread Ray installs a Ctrl-C handler that ends the job
    without an error; here Ctrl-C stops this process, and Ray's shutdown stops the workers, the checkpoints kept."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, raised there
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="kiln-distributed-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.5)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _model(family: str, checkpoint: Any) -> XgbModel | LgbmModel:
    if family == "xgb":
        from ray.train.xgboost import RayTrainReportCallback as XgbReport

        return XgbModel(XgbReport.get_model(checkpoint))
    from ray.train.lightgbm import RayTrainReportCallback as LgbmReport

    return LgbmModel(LgbmReport.get_model(checkpoint))
