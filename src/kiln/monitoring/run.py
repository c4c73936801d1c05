"""A monitor run: an endpoint's captured traffic in a window, against the baseline of the version it serves.

Four monitors, each with its findings and violations: data quality (constraints) and data drift, model
quality (needs ground-truth labels), bias drift (labels and facets), attribution drift (SHAP ranking, NDCG).
A window with no traffic gives status "no_data", not an error. Outputs go to WS/reports/monitor/ENDPOINT/RUN/:
report.html (with Evidently's data_drift.html and model_quality.html), violations.json, result.json and
metrics.prom; the Evidently snapshots are added to the workspace `evidently ui` shows.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kiln.clarify.facets import favourable_outcomes, with_facets
from kiln.errors import InputError
from kiln.monitoring.alerts import Alert
from kiln.monitoring.attribution import global_ranking, importances, ndcg
from kiln.monitoring.baseline import THRESHOLD, create_baseline
from kiln.monitoring.bias_drift import bias_drift
from kiln.monitoring.constraints import check_constraints
from kiln.monitoring.drift import drift_violations, measure_drift
from kiln.monitoring.endpoint import (
    capture_root,
    reports_folder,
    served_version,
    version_records,
    workspace_capture,
)
from kiln.monitoring.history import add_snapshots
from kiln.monitoring.labels import read_labels
from kiln.monitoring.metrics import write_metrics
from kiln.monitoring.quality import model_quality, quality_violations
from kiln.monitoring.report import write_report
from kiln.monitoring.traffic import ID, PREDICTION, Traffic, read_traffic
from kiln.monitoring.violations import Violation
from kiln.monitoring.window import Window
from kiln.progress import Progress, no_progress
from kiln.serving.local import capture_endpoint_url, list_endpoints
from kiln.storage import S3Store
from kiln.training.data import TIME_COLUMN, load_training_set
from kiln.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

    from kiln.monitoring.baseline import Baseline
    from kiln.monitoring.retrain import RetrainFailure, Retraining

LABEL = "label"
BIAS_ROWS = 20_000  # labelled rows bias drift bootstraps at most (a uniform sample above it; the result says so)
RESULT_FILE, REPORT_FILE, VIOLATIONS_FILE, METRICS_FILE = "result.json", "report.html", "violations.json", "metrics.prom"

Status = Literal["ok", "violations", "no_data"]


@dataclass(frozen=True)
class _Section:
    """A monitor's findings: the fields that apply to this run (a field left None is not part of it)."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class DataQuality(_Section):
    rows: int
    unparseable_requests: int
    features: dict[str, dict[str, Any]]  # per feature: what the window showed against the baseline's constraints


@dataclass(frozen=True)
class DataDrift(_Section):
    """Drift per feature; only a note when the window has no rows to measure."""

    rows: int | None = None  # rows measured
    columns: list[dict[str, Any]] | None = None  # {"feature", "type", "method", "score", "threshold", "drifted"}
    drifted: list[str] | None = None
    note: str | None = None


@dataclass(frozen=True)
class ModelQuality(_Section):
    """Quality on labelled live rows beside the baseline's; no ``observed`` (a note instead) when too few are labelled."""

    rows: int
    baseline: dict[str, Any]
    observed: dict[str, Any] | None = None
    note: str | None = None


@dataclass(frozen=True)
class BiasDrift(_Section):
    """Bias metrics by facet on labelled live rows; only a note when there are no facets or labels to judge by."""

    rows: int | None = None
    facets: list[dict[str, Any]] | None = None
    note: str | None = None


@dataclass(frozen=True)
class AttributionDrift(_Section):
    """The live SHAP ranking against the baseline's; only rows and a note when too few rows were answered."""

    rows: int
    ndcg: float | None = None
    threshold: float | None = None
    ranking: list[dict[str, Any]] | None = None  # {"feature", "baseline", "observed"}: mean |SHAP| before and now
    explainer: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Monitors:
    data_quality: DataQuality
    data_drift: DataDrift
    model_quality: ModelQuality
    bias_drift: BiasDrift
    attribution_drift: AttributionDrift

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name).to_dict() for f in fields(self)}


@dataclass(frozen=True)
class MonitorRun:
    """A monitor run: its window and traffic, what each monitor found, the violations and where the outputs went."""

    endpoint: str
    run: str
    model: str  # NAME/VERSION
    baseline: str  # the baseline's folder
    baseline_made: bool
    window: Window
    records: int
    rows: int
    shadow_records_skipped: int
    variants: dict[str, int]  # requests per variant
    read_seconds: float
    status: Status
    monitors: Monitors | None  # None when the window has no data
    violations: list[Violation]
    finished_unix: float
    report: str | None  # None when the window has no data
    metrics: str
    violations_file: str
    outputs: str  # the run's folder
    message: str | None = None  # why there is no data
    evidently_project: str | None = None  # set when Evidently snapshots were stored
    alerts: list[Alert] | None = None  # the monitor job's, on violations with webhooks
    retrain: Retraining | RetrainFailure | None = None  # the monitor job's, on violations with --on-violation retrain
    published: str | None = None  # the s3:// prefix holding a copy of the outputs (artifacts store on S3)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "endpoint": self.endpoint, "run": self.run, "model": self.model, "baseline": self.baseline,
            "baseline_made": self.baseline_made, "window": self.window.to_dict(), "records": self.records,
            "rows": self.rows, "shadow_records_skipped": self.shadow_records_skipped, "variants": self.variants,
            "read_seconds": self.read_seconds,
        }
        violations = [v.to_dict() for v in self.violations]
        if self.monitors is None:  # the keys of a run without data come in the order its documents always had
            data.update(status=self.status, violations=violations, monitors={}, report=self.report,
                        message=self.message, finished_unix=self.finished_unix)
        else:
            data.update(status=self.status, monitors=self.monitors.to_dict(), violations=violations,
                        finished_unix=self.finished_unix, report=self.report)
            if self.evidently_project is not None:
                data["evidently_project"] = self.evidently_project
        data.update(metrics=self.metrics, violations_file=self.violations_file, outputs=self.outputs)
        if self.published is not None:
            data["published"] = self.published
        if self.alerts is not None:
            data["alerts"] = [a.to_dict() for a in self.alerts]
        if self.retrain is not None:
            data["retrain"] = self.retrain.to_dict()
        return data


def write_result(run: MonitorRun, name_outputs: bool = True) -> Path:
    """Write the run's result.json in its folder. A run writes it without ``outputs`` (the folder it is in); the
    monitor job, writing it again with alerts or retraining, keeps it."""

    data = run.to_dict()
    if not name_outputs:
        del data["outputs"]
    path = Path(run.outputs, RESULT_FILE)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def run_monitor(ws: Workspace, endpoint: str, since: datetime | None = None, until: datetime | None = None,
                progress: Progress = no_progress, model: str | None = None,
                capture: Path | str | None = None) -> MonitorRun:
    """Run every monitor over ``endpoint``'s capture in [since, until) and write the run's outputs.

    ``model`` (NAME/VERSION or NAME@ALIAS) and ``capture`` (the capture root) default to what the deployed endpoint
    serves and writes; given, they monitor a capture store no local endpoint owns (a cluster's, a benchmark's). An
    endpoint a cluster serves is read from the workspace's capture store, where the chart's collector writes.
    """

    until = until or datetime.now(UTC)
    given_model, model = model, served_version(ws, endpoint, model)
    baseline, made = create_baseline(ws, model, progress=progress)
    if made:
        progress(f"made the baseline of {model} (it had none): {baseline.folder}")
    # an endpoint served elsewhere, named with its model: the workspace's capture store, where its capture goes
    served_elsewhere = given_model is not None and endpoint not in list_endpoints(ws)
    root = capture or (workspace_capture(ws) if served_elsewhere else capture_root(ws, endpoint))
    run = f"monitor-{until.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    out = reports_folder(ws, endpoint) / run
    out.mkdir(parents=True, exist_ok=True)
    progress(f"reading {endpoint}'s capture" + (f" since {since.isoformat(timespec='seconds')}" if since else ""))
    started = time.perf_counter()
    traffic = read_traffic(root, endpoint, baseline.kinds, since, until, capture_endpoint_url(ws),
                           None if capture else version_records(ws, endpoint, model))
    variants = {str(k): int(v) for k, v in traffic.frame["variant"].value_counts().items()}
    read_seconds = round(time.perf_counter() - started, 2)
    monitors: Monitors | None = None
    violations: list[Violation] = []
    snapshots: list[tuple[str, Any]] = []
    if traffic.records:
        monitors, violations, snapshots = _monitor(ws, endpoint, run, baseline, traffic, out, progress)
    finished = time.time()
    result = MonitorRun(
        endpoint=endpoint, run=run, model=model, baseline=str(baseline.folder), baseline_made=made,
        window=Window(since, until), records=traffic.records, rows=traffic.rows,
        shadow_records_skipped=traffic.shadow_records, variants=variants, read_seconds=read_seconds,
        status="no_data" if monitors is None else "violations" if violations else "ok", monitors=monitors,
        violations=violations, finished_unix=finished, report=None if monitors is None else str(out / REPORT_FILE),
        metrics=str(out / METRICS_FILE), violations_file=str(out / VIOLATIONS_FILE), outputs=str(out),
        message=f"no captured requests for endpoint {endpoint} in the window" if monitors is None else None,
        evidently_project=add_snapshots(ws, endpoint, snapshots) if snapshots else None)
    if result.report is not None:
        write_report(result, Path(result.report))
    metrics = write_metrics(result, Path(result.metrics))
    latest = ws.folder("monitoring") / "metrics" / f"{endpoint}.prom"
    latest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(metrics, latest)  # the textfile collector's file: always the latest run
    Path(result.violations_file).write_text(json.dumps([v.to_dict() for v in violations], indent=2) + "\n")
    result = replace(result, published=published_prefix(ws, endpoint, run))
    write_result(result, name_outputs=False)
    publish_outputs(ws, result)
    return result


def published_prefix(ws: Workspace, endpoint: str, run: str) -> str | None:
    """Where a run's outputs are copied: under the artifacts store when it is on S3, else nowhere."""
    store = ws.settings.artifacts
    return f"{store.uri.rstrip('/')}/reports/monitor/{endpoint}/{run}" if store.type == "s3" else None


def publish_outputs(ws: Workspace, result: MonitorRun) -> None:
    """Copy the run's folder to its S3 prefix, each file one object, result.json last (a reader that finds it finds
    the rest)."""
    if result.published is None:
        return
    store = S3Store(result.published, ws.settings.artifacts.endpoint_url if ws.settings.artifacts.type == "s3"
                    else None)
    folder = Path(result.outputs)
    files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.name == RESULT_FILE)
    for path in files:
        store.put(path.relative_to(folder).as_posix(), path.read_bytes())


def _monitor(ws: Workspace, endpoint: str, run: str, baseline: "Baseline", traffic: Traffic, out: Path,
             progress: Progress) -> tuple[Monitors, list[Violation], list[tuple[str, Any]]]:
    """(each monitor's findings, the violations, Evidently's snapshots) of a window with traffic."""

    violations: list[Violation] = []
    snapshots: list[tuple[str, Any]] = []
    data_quality, found = _data_quality(baseline, traffic, ws)
    violations += found
    data_drift, found, snapshot = _data_drift(baseline, traffic, ws, progress)
    violations += found
    if snapshot is not None:
        snapshot.save_html(str(out / "data_drift.html"))
        snapshots.append((f"{run} data drift", snapshot))
    labelled = _labelled(ws, endpoint, baseline, traffic)
    model_quality, found, snapshot = _model_quality(baseline, labelled, ws, progress)
    violations += found
    if snapshot is not None:
        snapshot.save_html(str(out / "model_quality.html"))
        snapshots.append((f"{run} model quality", snapshot))
    bias, found = _bias(ws, baseline, labelled, progress)
    violations += found
    attribution, found = _attribution(baseline, traffic, ws, progress)
    violations += found
    return Monitors(data_quality, data_drift, model_quality, bias, attribution), violations, snapshots


def _data_quality(baseline: "Baseline", traffic: Traffic, ws: Workspace) -> tuple[DataQuality, list[Violation]]:
    found, observed = check_constraints(baseline.features, traffic, ws.settings.monitoring)
    return DataQuality(traffic.rows, traffic.unparseable, observed), found


def _data_drift(baseline: "Baseline", traffic: Traffic, ws: Workspace,
                progress: Progress) -> tuple[DataDrift, list[Violation], Any]:

    limits = ws.settings.monitoring
    if traffic.rows == 0:
        return DataDrift(note="no readable rows in the window"), [], None
    progress(f"data drift of {traffic.rows} rows (Evidently)")
    reference = baseline.reference()
    drift = measure_drift(reference, traffic.frame, baseline.kinds, limits.drift_threshold, limits.drift_sample_rows)
    notes = []
    if drift.sampled_from:
        notes.append(f"measured on a uniform sample of {drift.rows} of the window's {drift.sampled_from} rows")
    if traffic.rows < limits.min_rows:
        notes.append(f"only {traffic.rows} rows: drift scores this small are noisy")
    section = DataDrift(drift.rows, drift.columns, drift.drifted, "; ".join(notes) or None)
    return section, drift_violations(drift, reference, traffic.frame), drift.snapshot


def _labelled(ws: Workspace, endpoint: str, baseline: "Baseline", traffic: Traffic) -> "pd.DataFrame | None":
    """Answered rows joined to their ground-truth labels (and the labels file's other columns)."""

    labels = read_labels(ws, endpoint)
    if labels is None or traffic.rows == 0:
        return None
    answered = traffic.frame[traffic.frame[PREDICTION].notna()]
    extra = [c for c in labels.columns if c not in answered.columns or c == ID]
    return answered.merge(labels[extra], on=ID, how="inner")


def _model_quality(baseline: "Baseline", labelled: "pd.DataFrame | None", ws: Workspace,
                   progress: Progress) -> tuple[ModelQuality, list[Violation], Any]:

    limits = ws.settings.monitoring
    base = baseline.data["model_quality"]
    if labelled is None or labelled.empty:
        return ModelQuality(0, base, note="no ground-truth labels for this window's predictions "
                            "(add them with `kiln monitor labels PATH`)"), [], None
    if len(labelled) < limits.min_rows:
        return ModelQuality(len(labelled), base, note=f"{len(labelled)} labelled rows: fewer than "
                            f"{limits.min_rows}, reported only"), [], None
    progress(f"model quality on {len(labelled)} labelled rows (Evidently)")
    task = baseline.task
    observed, snapshot = model_quality(task, labelled, base.get("threshold", THRESHOLD))
    observed["rows"] = len(labelled)
    found = quality_violations(base, observed, limits.checked_quality(task.kind), limits.quality_tolerance)
    return ModelQuality(len(labelled), base, observed), found, snapshot


def _bias(ws: Workspace, baseline: "Baseline", labelled: "pd.DataFrame | None",
          progress: Progress) -> tuple[BiasDrift, list[Violation]]:

    base = baseline.data["bias"]
    if not base.get("protected"):
        return BiasDrift(note=base.get("note") or "the model's dataset has no protected columns"), []
    if labelled is None or labelled.empty:
        return BiasDrift(note="no ground-truth labels for this window's predictions"), []
    sampled = len(labelled) > BIAS_ROWS
    if sampled:
        labelled = labelled.sample(n=BIAS_ROWS, random_state=0)
    frame = _with_facets(ws, baseline, labelled, base["protected"], progress)
    try:
        frame = favourable_outcomes(baseline.task, frame, LABEL, frame[PREDICTION].to_numpy())
    except InputError as exc:
        return BiasDrift(note=str(exc)), []
    facets, found, note = bias_drift(base, frame, ws.settings.monitoring)
    if sampled:
        note = "; ".join(filter(None, [note, f"measured on a uniform sample of {BIAS_ROWS} labelled rows"]))
    return BiasDrift(len(frame), facets, note or None), found


def _with_facets(ws: Workspace, baseline: "Baseline", labelled: "pd.DataFrame", protected: list[str],
                 progress: Progress) -> "pd.DataFrame":
    """The labelled rows with their facets: from the labels file, else from the feature store by key and time."""

    if all(c in labelled.columns for c in protected):
        return labelled.copy()
    key = baseline.data.get("key")
    if not key or key not in labelled.columns or TIME_COLUMN not in labelled.columns:
        return labelled.copy()  # bias_drift says what is missing
    import pandas as pd

    progress(f"facets of {len(labelled)} labelled rows from the feature store")
    data = load_training_set(Path(baseline.data["training_set"]))
    rows = labelled.copy()
    rows[TIME_COLUMN] = pd.to_datetime(rows[TIME_COLUMN], utc=True)
    return with_facets(ws, data, rows.reset_index(drop=True))


def _attribution(baseline: "Baseline", traffic: Traffic, ws: Workspace,
                 progress: Progress) -> tuple[AttributionDrift, list[Violation]]:

    limits = ws.settings.monitoring
    answered = traffic.frame[traffic.frame[PREDICTION].notna()]
    if len(answered) < limits.min_rows:
        return AttributionDrift(len(answered), note=f"{len(answered)} answered rows: fewer than {limits.min_rows}, "
                                "too few for a SHAP ranking"), []
    rows = answered.sample(n=min(limits.attribution_rows, len(answered)), random_state=0)
    progress(f"SHAP ranking of {len(rows)} live rows")
    live = global_ranking(baseline.data["model_uri"], rows[list(baseline.features)].reset_index(drop=True))
    before, now = importances(baseline.data["attribution"]), importances(live)
    score = round(ndcg(before, now), 6)
    ranking = [{"feature": f, "baseline": round(before[f], 6), "observed": round(now.get(f, 0.0), 6)}
               for f in sorted(before, key=lambda f: -before[f])]
    section = AttributionDrift(len(rows), score, limits.ndcg_threshold, ranking, live["explainer"])
    found = []
    if score < limits.ndcg_threshold:
        top_before = ", ".join(r["feature"] for r in baseline.data["attribution"]["ranking"][:3])
        top_now = ", ".join(r["feature"] for r in live["ranking"][:3])
        found.append(Violation("attribution_drift", "*", "ndcg", 1.0, score, limits.ndcg_threshold,
                               f"top features were {top_before}; now {top_now}"))
    return section, found
