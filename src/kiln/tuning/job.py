"""A tuning job: trials on Ray Tune, each an MLflow child run of the job's run; the best is refit and logged."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kiln import tracking
from kiln.errors import EnvironmentProblem, InputError, Interrupted, WorkspaceError
from kiln.files import write_json_atomic
from kiln.progress import Progress, no_progress
from kiln.settings import DebuggerSettings
from kiln.training.data import load_training_set
from kiln.training.debugger import Debugger, start_report
from kiln.training.entry import EntryLearner, context_for, entry_family, load_entry_point
from kiln.training.families import get_family
from kiln.training.family import Family, Fitted, Param
from kiln.training.metrics import Objective, objective
from kiln.training.prepare import fit, prepare
from kiln.training.ray_runtime import start_ray
from kiln.training.run import evaluate, experiment_name, lineage_tags, log_evaluation, log_trained_model
from kiln.tuning.plot import objective_plot
from kiln.tuning.space import clip, narrowed, parse_ranges, ray_space
from kiln.tuning.strategies import check_strategy, searcher_and_scheduler
from kiln.tuning.trainable import METRIC, run_entry_trial, run_trial
from kiln.workspace import Workspace


class TuningInterrupted(Interrupted):
    """A tuning job stopped before every trial finished (Ctrl-C, a lost worker); it can be resumed."""


WARM_MODES = ("identical", "transfer")
TRANSFER_SEEDS = 5  # earlier best configurations that seed a transfer warm start


@dataclass
class TuneSpec:
    family: str
    strategy: str
    trials: int
    max_concurrent: int
    seed: int
    training_set: str
    ranges: list[str] = field(default_factory=list)
    max_iterations: int | None = None
    warm_start_from: str | None = None
    warm_mode: str | None = None
    task: str | None = None  # overrides the training set's task (binary, multiclass, regression)
    entry_point: str | None = None  # the user's own training code, tuned instead of a family ("entry")


@dataclass
class TuneResult:
    job: str
    folder: str
    parent_run_id: str
    experiment: str
    metric: str  # the validation metric trials were scored on (each trial's valid_score)
    mode: str  # "max" or "min": whether a higher score is better
    spec: dict[str, Any]
    best: dict[str, Any]
    trials: list[dict[str, Any]]
    trial_iterations: int
    metrics: dict[str, dict[str, float | None]]
    model_uri: str
    plot: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def jobs_root(ws: Workspace) -> Path:
    return ws.folder("models") / "tuning"


def job_folder(ws: Workspace, job: str) -> Path:
    folder = jobs_root(ws) / job
    if not (folder / "job.json").is_file():
        known = sorted(p.name for p in jobs_root(ws).glob("*/job.json")) if jobs_root(ws).is_dir() else []
        raise WorkspaceError(f"no tuning job '{job}' in {jobs_root(ws)}",
                             hint=f"known jobs: {', '.join(p.split('/')[0] for p in known) or 'none'}")
    return folder


def read_job(ws: Workspace, job: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((job_folder(ws, job) / "job.json").read_text())
    return record


def spec_family(spec: TuneSpec) -> Family:
    """The family a job tunes: a built-in one, or the entry point's file seen as one."""
    if spec.entry_point:
        return entry_family(load_entry_point(Path(spec.entry_point)))
    return get_family(spec.family)


def check_spec(spec: TuneSpec) -> None:
    family = spec_family(spec)
    if spec.entry_point and not family.params:
        raise InputError(f"--entry-point {spec.entry_point}: declares no PARAMS to tune",
                         hint="add PARAMS = {'name': {'low': ..., 'high': ...}} to the file")
    check_strategy(spec.strategy)
    if spec.trials < 1:
        raise InputError(f"--trials {spec.trials}: run at least one trial")
    if spec.max_concurrent < 1:
        raise InputError(f"--max-concurrent {spec.max_concurrent}: at least one trial must run at a time")
    if spec.max_iterations is not None and not 1 <= spec.max_iterations <= family.max_iterations:
        raise InputError(f"--max-iterations {spec.max_iterations}: family {family.name} takes 1 to "
                         f"{family.max_iterations} ({family.unit} each)")
    if (spec.warm_start_from is None) != (spec.warm_mode is None):
        raise InputError("--warm-start-from and --mode go together")
    if spec.warm_mode is not None and spec.warm_mode not in WARM_MODES:
        raise InputError(f"--mode {spec.warm_mode}: choose one of {', '.join(WARM_MODES)}")
    narrowed(family, parse_ranges(spec.ranges))


def warm_start(ws: Workspace, spec: TuneSpec, data_sha: str, params: dict[str, Param], goal: Objective) -> tuple[
        list[dict[str, Any]], list[float] | None, list[dict[str, Any]]]:
    """(points to run first, their known scores for identical Bayesian, earlier trials that count as evaluated)."""

    if spec.warm_start_from is None:
        return [], None, []
    earlier = read_job(ws, spec.warm_start_from)
    trials = [t for t in json.loads((job_folder(ws, spec.warm_start_from) / "trials.json").read_text())
              if t.get("valid_score") is not None]
    if earlier["spec"]["family"] != spec.family or earlier["spec"].get("entry_point") != spec.entry_point:
        raise InputError(f"--warm-start-from {spec.warm_start_from}: that job tuned family "
                         f"{earlier['spec']['family']}, not {spec.family}")
    if earlier.get("metric") != goal.metric:
        raise InputError(f"--warm-start-from {spec.warm_start_from}: that job was scored on "
                         f"{earlier.get('metric', 'another metric')}, this one is scored on {goal.metric}")
    if spec.warm_mode == "identical":
        if earlier["training_set_sha256"] != data_sha:
            raise InputError(f"--mode identical: job {spec.warm_start_from} ran on other data "
                             f"({earlier['training_set_sha256'][:19]}...); use --mode transfer for new data")
        inherited = [{**t, "source": f"warm start: {spec.warm_start_from}/{t['trial_id']}"} for t in trials]
        if spec.strategy == "bayesian":
            return ([clip(t["config"], params) for t in trials], [t["valid_score"] for t in trials], inherited)
        return [], None, inherited
    best = sorted(trials, key=lambda t: t["valid_score"], reverse=goal.greater_is_better)[:TRANSFER_SEEDS]
    return [clip(t["config"], params) for t in best], None, []


def _trainable(spec: dict[str, Any], prep: Any, max_iterations: int, debugger: DebuggerSettings) -> Any:
    from ray import tune

    if spec.get("entry_point"):
        trial = tune.with_parameters(run_entry_trial, entry_path=spec["entry_point"], prep=prep, seed=spec["seed"],
                                     max_iterations=max_iterations)
    else:
        trial = tune.with_parameters(run_trial, family_name=spec["family"], prep=prep, seed=spec["seed"],
                                     max_iterations=max_iterations, debugger=debugger)
    return tune.with_resources(trial, {"cpu": 1})


def _progress_callback(total: int, progress: Progress, goal: Objective) -> Any:
    from ray.tune import Callback

    class Report(Callback):
        """One line per finished trial: its score and whether the scheduler stopped it early."""

        def __init__(self) -> None:
            self.done = 0
            self.best: dict[str, float] = {}

        def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                            **info: Any) -> None:
            score = result.get(METRIC)
            if score is not None:
                known = self.best.get(trial.trial_id)
                if known is None or goal.better(score, known):
                    self.best[trial.trial_id] = score

        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            self.done += 1
            last = trial.last_result or {}
            progress(f"trial {self.done}/{total} {trial.trial_id}: best {goal.label} "
                     f"{self.best.get(trial.trial_id, float('nan')):.4f}; ran {last.get('training_iteration', 0)} "
                     "iterations")

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            self.done += 1
            progress(f"trial {self.done}/{total} {trial.trial_id}: FAILED (see {trial.path}/error.txt)")

    return Report()


def run_job(ws: Workspace, spec: TuneSpec, progress: Progress = no_progress) -> TuneResult:
    """Start a tuning job; a job interrupted part way is finished later with resume_job."""

    check_spec(spec)
    family = spec_family(spec)
    params = narrowed(family, parse_ranges(spec.ranges))
    data = load_training_set(Path(spec.training_set), spec.task)
    goal = objective(data.task)
    points, evaluated, inherited = warm_start(ws, spec, data.lineage["training_set_sha256"], params, goal)
    job = f"tune-{spec.family}-{spec.strategy}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    folder = jobs_root(ws) / job
    folder.mkdir(parents=True, exist_ok=False)
    name = experiment_name(data)
    client = tracking.client(ws)
    parent = client.create_run(
        tracking.experiment_id(ws, name), run_name=job,
        tags={**lineage_tags(data, family, spec.seed), "kiln.tuning_job": job, "kiln.strategy": spec.strategy,
              **({"kiln.entry_point": spec.entry_point} if spec.entry_point else {}),
              **({"kiln.warm_start_from": spec.warm_start_from, "kiln.warm_start_mode": spec.warm_mode}
                 if spec.warm_start_from else {})},
    )
    for key, value in {**asdict(spec), "max_iterations": spec.max_iterations or family.max_iterations}.items():
        client.log_param(parent.info.run_id, key, json.dumps(value) if isinstance(value, list) else value)
    record = {"job": job, "spec": asdict(spec), "status": "running", "experiment": name, "task": data.task.to_dict(),
              "metric": goal.metric, "mode": goal.mode,
              "parent_run_id": parent.info.run_id, "training_set_sha256": data.lineage["training_set_sha256"],
              "started_at": datetime.now(UTC).isoformat(timespec="seconds"), "started_epoch": time.time(),
              "points": points, "evaluated": evaluated, "inherited": inherited}
    write_json_atomic(folder / "job.json", record, default=str)
    progress(f"job {job}: {spec.trials} {family.name} trials by {spec.strategy}, {spec.max_concurrent} at a time, "
             f"{data.task.kind} task scored on {goal.label}; "
             f"MLflow experiment '{name}', run {parent.info.run_id}")
    return _fit_resumable(ws, folder, record, params, data, progress, restore=False)


def resume_job(ws: Workspace, job: str, progress: Progress = no_progress) -> TuneResult:
    """Finish an interrupted job: finished trials are kept, unfinished ones go on from their checkpoints."""
    folder = job_folder(ws, job)
    record = json.loads((folder / "job.json").read_text())
    if record["status"] == "completed":
        raise InputError(f"tuning job {job} already finished", hint="start a new job, or warm start from this one")
    spec = TuneSpec(**record["spec"])
    family = spec_family(spec)
    data = load_training_set(Path(spec.training_set), spec.task)
    if data.lineage["training_set_sha256"] != record["training_set_sha256"]:
        raise InputError(f"tuning job {job}: its training set {spec.training_set} changed since the job started")
    progress(f"resuming job {job}")
    return _fit_resumable(ws, folder, record, narrowed(family, parse_ranges(spec.ranges)), data, progress,
                          restore=True)


def _resume_hint(job: str) -> str:
    return f"finish it with `kiln tune --resume {job}`"


def _fit_resumable(ws: Workspace, folder: Path, record: dict[str, Any], params: dict[str, Param], data: Any,
                   progress: Progress, restore: bool) -> TuneResult:
    """_fit; Ctrl-C at any point leaves the job "running", to be finished with --resume."""
    import ray

    started_here = not ray.is_initialized()
    try:
        return _fit(ws, folder, record, params, data, progress, restore)
    except KeyboardInterrupt:
        raise TuningInterrupted(f"tuning job {record['job']} was interrupted", hint=_resume_hint(record["job"])) \
            from None
    finally:
        if started_here:  # a Ray this job started ends with it; one the caller had going stays
            ray.shutdown()


def _fit(ws: Workspace, folder: Path, record: dict[str, Any], params: dict[str, Param], data: Any,
         progress: Progress, restore: bool) -> TuneResult:
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    spec = TuneSpec(**record["spec"])
    family = spec_family(spec)
    goal = Objective(record["metric"])
    max_iterations = spec.max_iterations or family.max_iterations
    started = time.monotonic()
    prep = prepare(data, spec.seed)
    start_ray(ws)
    trainable = _trainable(record["spec"], prep, max_iterations, ws.settings.debugger)
    ray_dir = folder / "ray"
    if restore and (ray_dir / "tuner.pkl").exists():
        tuner = tune.Tuner.restore(str(ray_dir), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        search, scheduler = searcher_and_scheduler(spec.strategy, max_iterations, spec.seed, spec.max_concurrent,
                                                   record["points"], record["evaluated"])
        mlflow_cb = MLflowLoggerCallback(
            tracking_uri=ws.settings.mlflow.tracking_uri, registry_uri=ws.settings.mlflow.tracking_uri,
            experiment_name=record["experiment"],
            tags={"mlflow.parentRunId": record["parent_run_id"], "kiln.tuning_job": record["job"],
                  "kiln.family": spec.family},
        )
        tuner = tune.Tuner(
            trainable, param_space=ray_space(params),
            tune_config=tune.TuneConfig(metric=METRIC, mode=goal.mode, search_alg=search, scheduler=scheduler,
                                        num_samples=spec.trials, max_concurrent_trials=spec.max_concurrent,
                                        # A reused actor that Hyperband pauses and hands another trial can
                                        # stall the whole job (seen under CPU contention); a fresh actor per
                                        # trial start costs about a second.
                                        reuse_actors=False),
            run_config=tune.RunConfig(
                name="ray", storage_path=str(folder), verbose=0,
                callbacks=[mlflow_cb, _progress_callback(spec.trials, progress, goal)],
                # Every checkpoint is kept while the job runs (a cap forces a costly experiment snapshot on
                # each report); _finish deletes them once the job is done.
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            ),
        )
    # Ray's own Ctrl-C handler ends the run quietly, marking cut-off trials as finished; without it Ctrl-C
    # raises here, the saved experiment state stays as it was, and the job stays "running" for --resume.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    grid = tuner.fit()
    if grid.num_terminated + grid.num_errors < spec.trials:
        raise TuningInterrupted(f"tuning job {record['job']} stopped with {grid.num_terminated} of {spec.trials} "
                                "trials finished", hint=_resume_hint(record["job"]))
    trials = _trial_records(grid, record["started_epoch"], goal) + list(record["inherited"])
    if not any(t["valid_score"] is not None and "error" not in t for t in trials):
        errors = [str(r.error) for r in grid if r.error is not None][:3]  # type: ignore[attr-defined]  # ResultGrid iterates by __getitem__; Ray declares no __iter__
        raise EnvironmentProblem(f"tuning job {record['job']}: no trial finished; "
                                 + ("; ".join(errors) or "no results"), hint=f"trial logs are under {folder / 'ray'}")
    return _finish(ws, folder, record, trials, prep, data, started, progress)


def _refit(spec: TuneSpec, family: Family, config: dict[str, Any], prep: Any, iterations: int,
           debugger: Debugger | None) -> tuple[Fitted, dict[str, Any]]:
    """The best configuration trained again: a family for the iterations that scored best (under the Debugger's
    rules, as its trials were); an entry point's code as it trains (it decides its own length); with the meta its
    model folder needs."""
    if not spec.entry_point:
        return fit(family, config, prep, spec.seed, iterations, debugger=debugger or False), {}
    entry = load_entry_point(Path(spec.entry_point))
    learner = EntryLearner(entry, entry.train(context_for(prep, entry, config, spec.seed, lambda i, m: None)),
                           prep.task)
    return learner, learner.meta()


def _trial_records(grid: Any, started_epoch: float, goal: Objective) -> list[dict[str, Any]]:
    """One record per trial: its configuration, best validation score and the iteration that reached it."""
    records = []
    for result in grid:
        frame = result.metrics_dataframe
        if frame is None or frame.empty or METRIC not in frame:
            records.append({"trial_id": Path(result.path).name, "config": result.config, "valid_score": None,
                            "best_iteration": 0, "iterations": 0, "stopped_early": False, "finished_s": None,
                            "source": "run", "error": str(result.error)})
            continue
        best = frame.loc[frame[METRIC].idxmax() if goal.greater_is_better else frame[METRIC].idxmin()]
        record = {"trial_id": str(frame["trial_id"].iloc[0]), "config": result.config,
                  "valid_score": float(best[METRIC]), "best_iteration": int(best["training_iteration"]),
                  "iterations": int(frame["training_iteration"].max()), "stopped_early": False,
                  "finished_s": round(float(frame["timestamp"].max()) - started_epoch, 1), "source": "run"}
        if "debugger_findings" in frame:  # the Debugger's word on the trial: its last report's
            last = frame.iloc[-1]
            record["debugger_findings"] = int(last["debugger_findings"])
            if isinstance(last.get("debugger_stopped"), str) and last["debugger_stopped"]:
                record["debugger_stopped"] = str(last["debugger_stopped"])
                record["debugger_stop_message"] = str(last["debugger_stop_message"])
        if result.error is not None:
            # A trial that died part way keeps what it measured, but it is marked and never chosen as best.
            record["error"] = f"{type(result.error).__name__}: {str(result.error)[-500:]}"
        records.append(record)
    return records


def _finish(ws: Workspace, folder: Path, record: dict[str, Any], trials: list[dict[str, Any]], prep: Any,
            data: Any, started: float, progress: Progress) -> TuneResult:
    """Refit the best configuration for the iterations that scored best, evaluate, log the model and the plot."""
    import mlflow

    spec = TuneSpec(**record["spec"])
    family = spec_family(spec)
    goal = Objective(record["metric"])
    max_iterations = spec.max_iterations or family.max_iterations
    for t in trials:
        if t["source"] == "run":
            t["stopped_early"] = "error" not in t and 0 < t["iterations"] < max_iterations
    failed = [t["trial_id"] for t in trials if "error" in t]
    if failed:
        progress(f"{len(failed)} trial(s) failed: {', '.join(failed)}; their errors are in trials.json")
    scored = [t for t in trials if t["valid_score"] is not None and "error" not in t]
    best = (max if goal.greater_is_better else min)(scored, key=lambda t: t["valid_score"])
    config = family.config({k: v for k, v in best["config"].items() if k in family.params})
    progress(f"best: trial {best['trial_id']} {goal.label} {best['valid_score']:.4f} at iteration "
             f"{best['best_iteration']}; refitting it")
    settings = ws.settings.debugger
    session = Debugger(settings) if settings.enabled and not spec.entry_point else None
    learner, extra = _refit(spec, family, config, prep, best["best_iteration"], session)
    metrics = evaluate(learner, prep, threshold=0.5)
    used = sum(t["iterations"] for t in trials if t["source"] == "run")
    write_json_atomic(folder / "trials.json", trials, default=str)
    plot = objective_plot(trials, goal, f"{record['job']}: {goal.label}", folder / "objective.png")
    tracking.client(ws)
    with mlflow.start_run(run_id=record["parent_run_id"]):
        report = start_report(session, ws, record["parent_run_id"], f"Debugger: {record['job']}'s best "
                              "configuration, refit") if session is not None else None
        mlflow.log_params({f"best_{k}": v for k, v in config.items()} | {"best_iterations": best["best_iteration"]})
        ran = sum(t["source"] == "run" for t in trials)
        mlflow.log_metrics({f"best_valid_{goal.metric}": best["valid_score"], "trials_run": ran,
                            "trial_iterations": used})
        log_evaluation(learner, prep, data, metrics)
        mlflow.log_artifact(str(plot), "tuning")
        mlflow.log_artifact(str(folder / "trials.json"), "tuning")
        model_uri = log_trained_model(learner, data, prep, family, config, spec.seed, 0.5, extra)
        if report is not None:
            report.finish()
    for checkpoint in (folder / "ray").glob("*/checkpoint_*"):
        shutil.rmtree(checkpoint, ignore_errors=True)  # trials are done: their checkpoints are no longer needed
    seconds = round(time.monotonic() - started, 1)
    record.update(status="completed", finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
                  best=best, model_uri=model_uri, metrics=metrics, trial_iterations=used, plot=str(plot))
    write_json_atomic(folder / "job.json", record, default=str)
    return TuneResult(job=record["job"], folder=str(folder), parent_run_id=record["parent_run_id"],
                      experiment=record["experiment"], metric=goal.metric, mode=goal.mode, spec=record["spec"], best=best, trials=trials,
                      trial_iterations=used, metrics=metrics, model_uri=model_uri, plot=str(plot), seconds=seconds)
