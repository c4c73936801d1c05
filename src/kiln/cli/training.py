"""`kiln train` and `kiln tune`: model training and automatic model tuning."""

from __future__ import annotations

from pathlib import Path

import typer

from kiln.cli.command import WorkspaceOption, respond
from kiln.cli.models import render_registration
from kiln.cli.output import JsonOption, out, progress
from kiln.training.distributed import DistributedSpec, resume_distributed, train_distributed
from kiln.training.family import parse_params
from kiln.training.run import TrainResult, train_entry_point
from kiln.training.run import train as train_model
from kiln.tuning.job import TuneSpec
from kiln.workflow.tuning import TuneOutcome, tune_and_register

TrainingSetOption = typer.Option(..., "--training-set", "-t",
                                 help="A training set from `kiln features training-set` (parquet, with its .json).")
SeedOption = typer.Option(7, "--seed", help="Seed for the split, the model and the search: same seed, same result.")


TaskOption = typer.Option(None, "--task", help="binary, multiclass or regression (default: the one the training set "
                                              "records, read from its label).")


def _metrics_line(metrics: dict[str, float | None]) -> str:
    keys = ("auc", "pr_auc", "f1", "precision", "recall", "accuracy", "f1_macro", "f1_weighted", "log_loss", "ece",
            "rmse", "mae", "r2", "mape")
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in keys if metrics.get(k) is not None)


def _render_trained(result: TrainResult) -> None:
    out.print(f"trained {result.family} for a {result.task['kind']} task ({result.iterations} iterations), MLflow run "
              f"{result.run_id} "
              f"in experiment '{result.experiment}'", markup=False)
    for part, label in (("valid", "validation"), ("test", "test")):
        out.print(f"  {label}: {_metrics_line(result.metrics[part])}", markup=False)
    out.print(f"  model: {result.model_uri}", markup=False)
    if result.distributed is not None:
        d = result.distributed
        resumed = f", resumed from its checkpoint at round {d.resumed_from_round}" if d.resumed_from_round else ""
        out.print(f"  distributed job {d.job}: {d.workers} workers, {d.rounds} rounds ({d.rounds_per_second:.1f} a "
                  f"second of training), {d.seconds:.1f}s in all{resumed}; checkpoints in {d.folder}", markup=False)
    found = result.debugger
    if found is not None:
        stopped = f"; stopped at iteration {found.stopped_at} by {found.stopped_by}" if found.stopped_by else ""
        out.print(f"  debugger: {len(found.findings)} finding(s) from {len(found.rules)} rules{stopped}", markup=False)
        for f in found.findings:
            out.print(f"    {f.rule} ({f.action}) at iteration {f.step}: {f.message}", markup=False)
        out.print(f"  debugger report: {found.report}", markup=False)


def _render_tuned(outcome: TuneOutcome) -> None:
    result, best = outcome.result, outcome.result.best
    ran = sum(t["source"] == "run" for t in result.trials)
    early = sum(t.get("stopped_early", False) for t in result.trials)
    failed = sum("error" in t for t in result.trials)
    out.print(f"tuning job {result.job}: {ran} trials ({early} stopped early" + (f", {failed} FAILED" if failed else "")
              + f"), {result.trial_iterations} trial-iterations, {result.seconds:.0f}s", markup=False)
    out.print(f"  best trial {best['trial_id']}: validation {result.metric} {best['valid_score']:.4f} at iteration "
              f"{best['best_iteration']} ({best['source']})", markup=False)
    out.print(f"  config: {best['config']}", markup=False)
    out.print(f"  test: {_metrics_line(result.metrics['test'])}", markup=False)
    out.print(f"  MLflow run {result.parent_run_id} (experiment '{result.experiment}'); model {result.model_uri}",
              markup=False)
    out.print(f"  objective plot: {result.plot}", markup=False)
    ruled = [t for t in result.trials if t.get("debugger_stopped")]
    if ruled:
        out.print(f"  {len(ruled)} trial(s) stopped by a Debugger rule: "
                  + ", ".join(f"{t['trial_id']} ({t['debugger_stopped']} at iteration {t['iterations']})"
                              for t in ruled), markup=False)
    if outcome.registered:
        render_registration(outcome.registered)


def train(
    training_set: Path | None = typer.Option(None, "--training-set", "-t",
                                                help="A training set from `kiln features training-set` (parquet, "
                                                     "with its .json)."),
    family: str = typer.Option("lgbm", "--family", "-f", help="Model family: lgbm, xgb or mlp."),
    param: list[str] = typer.Option([], "--param", "-p", help="NAME=VALUE, e.g. learning_rate=0.05 (repeatable)."),
    iterations: int | None = typer.Option(None, "--iterations", help="Training length (the family's default)."),
    threshold: float = typer.Option(0.5, "--threshold", min=0.0, max=1.0,
                                    help="Binary task: the probability from which the positive class is predicted."),
    task: str | None = TaskOption,
    entry_point: Path | None = typer.Option(None, "--entry-point", help="Your own training code instead of a "
                                               "family: a Python file with train(context) and predict(model, x) "
                                               "(see examples/)."),
    workers: int | None = typer.Option(None, "--workers", min=1,
                                       help="Distributed training (xgb, lgbm): data-parallel on this many Ray Train "
                                            "workers, checkpointed; a lost worker is replaced and the job goes on."),
    checkpoint_every: int = typer.Option(5, "--checkpoint-every", min=1,
                                         help="Distributed training: iterations between checkpoints."),
    resume: str | None = typer.Option(None, "--resume", help="Finish a distributed training job that stopped, from "
                                                            "its newest checkpoint."),
    debugger: bool | None = typer.Option(None, "--debugger/--no-debugger", help="Evaluate the Debugger's rules "
                                         "at every iteration and profile the training (default: the settings' "
                                         "debugger.enabled, on)."),
    rule: list[str] = typer.Option([], "--rule", help="Change a Debugger rule: NAME=stop|alert|off or "
                                   "NAME.PARAM=VALUE, e.g. Overfit=stop, overtraining.patience_validation=5 "
                                   "(repeatable)."),
    seed: int = SeedOption,
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Train one model of a family (or of your own code) on a training set and log it to MLflow (params, metrics
    per iteration, model)."""
    if resume is not None:
        respond(workspace, as_json, lambda ws: resume_distributed(ws, resume, progress=progress), _render_trained)
        return
    if training_set is None:
        raise typer.BadParameter("a training set is needed (or --resume JOB)", param_hint="--training-set")
    chosen = training_set
    if (workers is not None or entry_point is not None) and (rule or debugger):
        raise typer.BadParameter("the Debugger watches the built-in families trained on one worker; drop --rule and "
                                 "--debugger, or --workers and --entry-point", param_hint="--rule")
    if workers is not None:
        if entry_point is not None:
            raise typer.BadParameter("distributed training takes a built-in family (xgb, lgbm), not --entry-point",
                                     param_hint="--workers")
        spec = DistributedSpec(training_set=str(training_set.resolve()), family=family, workers=workers,
                               params=parse_params(param), seed=seed, iterations=iterations, threshold=threshold,
                               task=task, checkpoint_every=checkpoint_every)
        respond(workspace, as_json, lambda ws: train_distributed(ws, spec, progress=progress), _render_trained)
        return
    if entry_point is not None:
        respond(workspace, as_json, lambda ws: train_entry_point(ws, chosen, entry_point, parse_params(param),
                                                                 seed=seed, threshold=threshold, progress=progress,
                                                                 task=task),
                _render_trained)
        return
    respond(workspace, as_json, lambda ws: train_model(ws, chosen, family, parse_params(param), seed=seed,
                                                       iterations=iterations, threshold=threshold, progress=progress,
                                                       task=task, debugger=debugger, rules=list(rule)),
            _render_trained)


def tune(
    training_set: Path | None = typer.Option(None, "--training-set", "-t",
                                                help="A training set from `kiln features training-set`."),
    family: str = typer.Option("lgbm", "--family", "-f", help="Model family: lgbm, xgb or mlp."),
    strategy: str = typer.Option("hyperband", "--strategy", "-s", help="hyperband, asha, random or bayesian."),
    trials: int = typer.Option(12, "--trials", "-n", help="How many configurations to try."),
    max_concurrent: int = typer.Option(2, "--max-concurrent", "-k", help="Trials running at once."),
    max_iterations: int | None = typer.Option(None, "--max-iterations",
                                                 help="Longest a trial may train (the family's full length)."),
    ranges: list[str] = typer.Option([], "--range", help="Narrow the search: NAME=LOW:HIGH or NAME=A,B,C."),
    warm_start_from: str | None = typer.Option(None, "--warm-start-from", help="An earlier tuning job."),
    mode: str | None = typer.Option(None, "--mode", help="Warm start: identical (same data; earlier trials count "
                                       "as evaluated) or transfer (earlier best configurations seed a new search)."),
    resume: str | None = typer.Option(None, "--resume", help="Finish an interrupted tuning job by its id."),
    model_name: str | None = typer.Option(None, "--model-name", help="Register the best model under this name "
                                             "(default: the dataset's name) with alias challenger."),
    register: bool = typer.Option(True, "--register/--no-register", help="Register the best model."),
    task: str | None = TaskOption,
    entry_point: Path | None = typer.Option(None, "--entry-point", help="Tune your own training code (its PARAMS) "
                                               "instead of a family: each report() it makes is a trial's score."),
    seed: int = SeedOption,
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Tune a family's hyperparameters on Ray Tune; each trial is an MLflow child run of the job's run."""
    spec = None
    if resume is None and training_set is not None:
        spec = TuneSpec(family="entry" if entry_point else family, strategy=strategy, trials=trials,
                        max_concurrent=max_concurrent, seed=seed, training_set=str(training_set.resolve()),
                        ranges=list(ranges), max_iterations=max_iterations, warm_start_from=warm_start_from,
                        warm_mode=mode, task=task, entry_point=str(entry_point.resolve()) if entry_point else None)
    respond(workspace, as_json, lambda ws: tune_and_register(ws, spec, resume, register, model_name, progress),
            _render_tuned)
