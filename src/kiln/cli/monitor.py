"""`kiln monitor ...`: baselines, monitor runs over captured traffic, ground-truth labels and schedules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from kiln import IMAGE
from kiln.cli.command import WorkspaceOption, respond, show
from kiln.cli.output import JsonOption, out, progress
from kiln.errors import InputError
from kiln.monitoring import schedule as schedules
from kiln.monitoring.baseline import BaselineSummary, summarize_baseline
from kiln.monitoring.job import monitor_job
from kiln.monitoring.labels import IngestedLabels, ingest_labels
from kiln.monitoring.run import MonitorRun
from kiln.monitoring.schedule import ScheduleStatus, StartedSchedule, StoppedSchedule
from kiln.monitoring.window import parse_time

app = typer.Typer(help="Model Monitor (Evidently): baseline, run, labels, schedule.", no_args_is_help=True,
                  rich_markup_mode=None)
EndpointOption = typer.Option(..., "--endpoint", "-e", help="The endpoint whose capture is monitored.")


def _say(text: str) -> None:
    out.print(text, markup=False)


def _headline(quality: dict[str, Any]) -> tuple[str, float | None]:
    """The quality metric a line shows: AUC, macro F1 or R², whichever the model's task has."""
    name = next((n for n in ("roc_auc", "f1_macro", "r2") if n in quality), "accuracy")
    return name, quality.get(name)


def _num(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"


def _render_baseline(made: BaselineSummary) -> None:
    verb = "made" if made.made else "exists (use --rebaseline to make it again)"
    _say(f"baseline of {made.model} {verb}: {made.folder}")
    name, value = _headline(made.model_quality)
    _say(f"  {made.rows} training rows, {made.features} features; held-out {name} {_num(value)}")
    _say(f"  facets: {', '.join(made.facets) or 'none'}")
    _say(f"  top SHAP features: {', '.join(made.top_features)}")


def render_run(result: MonitorRun) -> None:
    """A monitor run for people: status, what each monitor found, the violations, where the outputs went."""
    monitors = result.monitors
    if monitors is None:
        window = result.window.to_dict()
        _say(f"{result.endpoint}: no data - {result.message} "
             f"(since {window['since'] or 'the start'}, until {window['until']})")
        return
    _say(f"{result.endpoint} ({result.model}): {result.records} requests, {result.rows} rows "
         f"-> {len(result.violations)} violation(s)")
    drift = monitors.data_drift
    if drift.columns:
        drifted = drift.drifted or []
        _say(f"  data drift: {len(drifted)} of {len(drift.columns)} features drifted"
             + (f" ({', '.join(drifted)})" if drifted else "") + (f"; {drift.note}" if drift.note else ""))
    quality, bias, attribution = monitors.model_quality, monitors.bias_drift, monitors.attribution_drift
    if quality.observed:
        name, value = _headline(quality.observed)
        _say(f"  model quality: {name} {_num(value)} (baseline {_num((quality.baseline or {}).get(name))}) "
             f"on {quality.rows} labelled rows")
    else:
        _say(f"  model quality: {quality.note or '-'}")
    if bias.facets:
        _say(f"  bias drift: {sum(f['judged'] for f in bias.facets)} facet(s) judged on {bias.rows} labelled rows")
    else:
        _say(f"  bias drift: {bias.note or '-'}")
    if attribution.ndcg is not None:
        _say(f"  attribution drift: NDCG {attribution.ndcg:.4f} (threshold {attribution.threshold}) on "
             f"{attribution.rows} rows")
    else:
        _say(f"  attribution drift: {attribution.note or '-'}")
    for v in result.violations:
        _say(f"  VIOLATION {v.monitor}: {v.feature} {v.metric} = {v.observed} (threshold {v.threshold}): {v.detail}")
    for alert in result.alerts or []:
        _say(f"  alert to {alert.url}: {'sent' if alert.ok else 'FAILED'} ({alert.status or alert.error})")
    if result.retrain:
        _say(f"  retraining: {result.retrain.summary}")
    _say(f"  report: {result.report}")
    _say(f"  violations: {result.violations_file}")
    _say(f"  metrics: {result.metrics}")


def _render_labels(stored: IngestedLabels) -> None:
    rate = f" (positive rate {stored.positive_rate})" if stored.positive_rate is not None else ""
    _say(f"{stored.rows} labels for {stored.endpoint} stored{rate}: {stored.file}")


def _render_schedules(listed: list[ScheduleStatus]) -> None:
    for s in listed:
        last = s.last
        _say(f"{s.schedule.endpoint}: every {s.schedule.every}, {s.state}; runs {last.get('runs', 0)}, last "
             f"{last.get('last_status', '-')} ({last.get('last_violations', 0)} violations), next "
             f"{last.get('next_run', '-')}")
    if not listed:
        _say("no monitor schedules")


def _render_cronjob(cronjob: dict[str, Any]) -> None:
    import yaml

    typer.echo(yaml.safe_dump(cronjob, sort_keys=False), nl=False)


def _render_stopped(stopped: StoppedSchedule) -> None:
    _say(f"monitor schedule of {stopped.endpoint} stopped")


def _render_started(made: StartedSchedule) -> None:
    endpoint = made.schedule.endpoint
    _say(f"monitoring {endpoint} every {made.schedule.every} in the background ({made.service}, {made.url}/v1/status); "
         f"log: {made.log}")
    _say(f"  reports: {made.reports}/; stop with `kiln monitor schedule -e {endpoint} --stop`")


@app.command("baseline")
def baseline(
    model: str = typer.Argument(..., help="NAME@ALIAS or NAME/VERSION."),
    rebaseline: bool = typer.Option(False, "--rebaseline", help="Make it again even if the version has one."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Statistics and constraints of the training data, holdout quality, bias by facet and the SHAP ranking."""
    respond(workspace, as_json, lambda ws: summarize_baseline(ws, model, rebaseline, progress), _render_baseline)


@app.command("run")
def run(
    endpoint: str = EndpointOption,
    since: str | None = typer.Option(None, "--since", help="Window start: ISO time, or a duration back from "
                                        "now (1h, 30m, 2d). Default: everything captured."),
    until: str | None = typer.Option(None, "--until", help="Window end (excluded): ISO time or a duration "
                                        "back from now. Default: now."),
    webhook: list[str] = typer.Option([], "--webhook", help="POST a JSON alert here on violations (repeatable; "
                                      "added to settings monitoring.webhooks)."),
    on_violation: str | None = typer.Option(None, "--on-violation", help="'retrain': on violations, retrain "
                                               "on fresh data and register the result as challenger."),
    model: str | None = typer.Option(None, "--model", help="NAME/VERSION or NAME@ALIAS the endpoint serves; "
                                        "needed for an endpoint a cluster serves (default: the local endpoint's)."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Run the four monitors over the endpoint's capture: data quality and drift, model quality, bias, attribution."""
    respond(workspace, as_json, lambda ws: monitor_job(ws, endpoint, parse_time(since, "--since"),
                                                       parse_time(until, "--until"), webhook, on_violation, progress,
                                                       model),
            render_run)


@app.command("labels")
def labels(
    path: Path = typer.Argument(..., help="CSV or parquet: an inference id column and a label column (0/1, a class "
                                "or a number, as the model predicts; a replay log works as it is)."),
    endpoint: str = EndpointOption,
    label: str | None = typer.Option(None, "--label", help="The label column (default: 'label', else the "
                                        "model's own label name)."),
    id_column: str = typer.Option("inference_id", "--id-column", help="The inference id column."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Ingest ground-truth labels; monitor runs join them to captured predictions by inference id."""
    respond(workspace, as_json, lambda ws: ingest_labels(ws, endpoint, path, label, id_column), _render_labels,
            engines=False)


@app.command("schedule")
def schedule(
    endpoint: str | None = typer.Option(None, "--endpoint", "-e", help="The endpoint to monitor."),
    every: str = typer.Option("1h", "--every", help="Interval between runs: 30s, 15m, 1h, 1d. Each run monitors "
                              "the window since the one before."),
    webhook: list[str] = typer.Option([], "--webhook", help="POST a JSON alert here on violations (repeatable)."),
    on_violation: str | None = typer.Option(None, "--on-violation", help="'retrain' on violations."),
    stop: bool = typer.Option(False, "--stop", help="Stop the endpoint's schedule and forget it."),
    list_all: bool = typer.Option(False, "--list", help="List the schedules, their state and last runs."),
    render: bool = typer.Option(False, "--render", help="Print the Kubernetes CronJob that runs this schedule in a "
                                "cluster instead of starting it here."),
    image: str = typer.Option(IMAGE, "--image", help="Image of the rendered CronJob: the platform image, "
                              "as your cluster pulls it."),
    model: str | None = typer.Option(None, "--model", help="With --render: the model the cluster's endpoint serves "
                                        "(default: ENDPOINT@champion)."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Run the monitors in the background every interval (locally); --render gives the cluster's CronJob."""
    if list_all:
        respond(workspace, as_json, schedules.list_schedules, _render_schedules, engines=False)
    elif endpoint is None:
        raise InputError("give --endpoint NAME (or --list)")
    elif render:
        show(schedules.render_cronjob(endpoint, every, image, on_violation=on_violation, model=model), as_json,
             _render_cronjob)
    elif stop:
        respond(workspace, as_json, lambda ws: schedules.delete_schedule(ws, endpoint), _render_stopped, engines=False)
    else:
        respond(workspace, as_json,
                lambda ws: schedules.create_schedule(ws, endpoint, every, webhook, on_violation, progress),
                _render_started, engines=False)
