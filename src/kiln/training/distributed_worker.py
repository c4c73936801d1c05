"""What each worker of a distributed training job runs (inside Ray Train): its shard of the rows, the library's
own data-parallel training, a checkpoint every few iterations, and a restart from the newest one."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kiln.data.task import Task
from kiln.training.metrics import objective, task_metrics

if TYPE_CHECKING:
    import numpy as np

RESUMED_FROM = "resumed_from_round"  # in every report: the boosting round this attempt of the job started from
TRAIN_SECONDS = "train_seconds"  # in every report: this attempt's seconds of training so far (rank 0's clock)


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, sent with the job (the rows go by reference to Ray's object store)."""

    family: str  # "xgb" or "lgbm"
    params: dict[str, Any]  # the library's own parameters
    rounds: int  # boosting rounds in all
    rounds_per_iteration: int
    checkpoint_rounds: int  # a checkpoint every this many rounds
    task: dict[str, Any]
    rows: Any  # ObjectRef of (x_train, y_train)
    valid: Any  # ObjectRef of (x_valid, y_valid): scored by rank 0 after each iteration
    tracking_uri: str
    run_id: str


def shard(rows: tuple["np.ndarray", "np.ndarray"], rank: int, world: int) -> tuple["np.ndarray", "np.ndarray"]:
    """This worker's rows: every world-th row from its rank (the split has already shuffled or ordered them)."""
    x, y = rows
    return x[rank::world], y[rank::world]


class _Scorer:
    """Rank 0's validation score after each iteration, logged to the job's MLflow run as the step-by-step curve."""

    def __init__(self, spec: WorkerSpec) -> None:
        import ray
        from mlflow import MlflowClient

        self.spec, self.task = spec, Task.from_dict(spec.task)
        self.goal = objective(self.task)
        self.x, self.y = ray.get(spec.valid)
        self.client = MlflowClient(tracking_uri=spec.tracking_uri)

    def after_round(self, round_index: int, output: Any) -> None:
        done = round_index + 1
        if done % self.spec.rounds_per_iteration and done != self.spec.rounds:
            return
        score = task_metrics(self.task, self.y, output(self.x))[self.goal.metric]
        iteration = -(-done // self.spec.rounds_per_iteration)
        self.client.log_metric(self.spec.run_id, f"valid_{self.goal.metric}",
                               self.goal.missing() if score is None else score, step=iteration)


def _checkpoint_reports(callback: Any, start_round: int, every: int) -> Any:
    """Ray's report callback for the library, reporting with checkpoints only (each report waits for the controller,
    seconds, and Ray's own reports every round), each marked with the round this attempt started from."""
    started = time.perf_counter()

    class CheckpointReports(callback):  # type: ignore[misc]
        def _report_metrics(self, report_dict: dict[str, Any]) -> None:
            pass

        def _save_and_report_checkpoint(self, report_dict: dict[str, Any], model: Any) -> None:
            super()._save_and_report_checkpoint(
                {**report_dict, RESUMED_FROM: start_round, TRAIN_SECONDS: time.perf_counter() - started}, model)

    return CheckpointReports(frequency=every)


def train_worker(config: dict[str, Any]) -> None:
    """Ray Train's per-worker loop for both libraries."""
    import ray
    import ray.train

    spec: WorkerSpec = config["spec"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    x, y = shard(ray.get(spec.rows), rank, world)
    scorer = _Scorer(spec) if rank == 0 else None
    if spec.family == "xgb":
        _train_xgb(spec, x, y, scorer)
    else:
        _train_lgbm(spec, x, y, scorer)


def _train_xgb(spec: WorkerSpec, x: "np.ndarray", y: "np.ndarray", scorer: _Scorer | None) -> None:
    import ray.train
    import xgboost as xgb
    from ray.train.xgboost import RayTrainReportCallback

    class Scored(xgb.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            assert scorer is not None
            scorer.after_round(epoch, model.inplace_predict)
            return False

    checkpoint = ray.train.get_checkpoint()
    start = RayTrainReportCallback.get_model(checkpoint) if checkpoint else None
    done = start.num_boosted_rounds() if start is not None else 0
    callbacks: list[Any] = [_checkpoint_reports(RayTrainReportCallback, done, spec.checkpoint_rounds)]
    if scorer is not None:
        callbacks.append(Scored())
    xgb.train(spec.params, xgb.DMatrix(x, label=y), num_boost_round=spec.rounds - done, xgb_model=start,
              callbacks=callbacks, verbose_eval=False)


def _train_lgbm(spec: WorkerSpec, x: "np.ndarray", y: "np.ndarray", scorer: _Scorer | None) -> None:
    import lightgbm as lgb
    import ray.train
    from ray.train.lightgbm import RayTrainReportCallback, get_network_params

    def scored(env: Any) -> None:
        assert scorer is not None
        scorer.after_round(env.iteration, env.model.predict)

    checkpoint = ray.train.get_checkpoint()
    start = RayTrainReportCallback.get_model(checkpoint) if checkpoint else None
    done = start.current_iteration() if start is not None else 0
    params = {**spec.params, **get_network_params(), "tree_learner": "data_parallel", "pre_partition": True}
    callbacks: list[Any] = [_checkpoint_reports(RayTrainReportCallback, done, spec.checkpoint_rounds)]
    if scorer is not None:
        callbacks.append(scored)
    lgb.train(params, lgb.Dataset(x, y), num_boost_round=spec.rounds - done, init_model=start, callbacks=callbacks)
