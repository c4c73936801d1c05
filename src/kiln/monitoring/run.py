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
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.clarify.facets import with_facets
from kiln.monitoring.attribution import global_ranking, importances, ndcg
from kiln.monitoring.baseline import THRESHOLD, create_baseline
from kiln.monitoring.bias_drift import bias_drift
from kiln.monitoring.constraints import check_constraints
from kiln.monitoring.drift import drift_violations, measure_drift
from kiln.monitoring.endpoint import capture_root, served_version
from kiln.monitoring.history import add_snapshots
from kiln.monitoring.labels import read_labels
from kiln.monitoring.metrics import write_metrics
from kiln.monitoring.quality import classification_quality, quality_violations
from kiln.monitoring.report import write_report
from kiln.monitoring.traffic import ID, PREDICTION, PROBABILITY, Traffic, read_traffic
from kiln.monitoring.violations import Violation
from kiln.progress import Progress, no_progress
from kiln.training.data import TIME_COLUMN, load_training_set
from kiln.training.scoring import PREDICTED
from kiln.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

    from kiln.monitoring.baseline import Baseline

LABEL = "label"
BIAS_ROWS = 20_000  # labelled rows bias drift bootstraps at most (a uniform sample above it; the result says so)


def run_monitor(ws: Workspace, endpoint: str, since: datetime | None = None, until: datetime | None = None,
                progress: Progress = no_progress, model: str | None = None,
                capture: Path | None = None) -> dict[str, Any]:
    """Run every monitor over ``endpoint``'s capture in [since, until) and write the run's outputs.

    ``model`` (NAME/VERSION) and ``capture`` (the capture root) default to what the deployed endpoint serves
    and writes; given, they monitor a capture store no local endpoint owns (a cluster's, a benchmark's).
    """

    until = until or datetime.now(UTC)
    model = model or served_version(ws, endpoint)
    baseline, made = create_baseline(ws, model, progress=progress)
    if made:
        progress(f"made the baseline of {model} (it had none): {baseline.folder}")
    root = capture or capture_root(ws, endpoint)
    run = f"monitor-{until.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    out = ws.folder("reports") / "monitor" / endpoint / run
    out.mkdir(parents=True, exist_ok=True)
    progress(f"reading {endpoint}'s capture" + (f" since {since.isoformat(timespec='seconds')}" if since else ""))
    started = time.perf_counter()
    traffic = read_traffic(root, endpoint, baseline.kinds, since, until)
    result: dict[str, Any] = {
        "endpoint": endpoint, "run": run, "model": model, "baseline": str(baseline.folder), "baseline_made": made,
        "window": {"since": since.isoformat() if since else None, "until": until.isoformat()},
        "records": traffic.records, "rows": traffic.rows, "shadow_records_skipped": traffic.shadow_records,
        "variants": {str(k): int(v) for k, v in traffic.frame["variant"].value_counts().items()},
        "read_seconds": round(time.perf_counter() - started, 2),
    }
    if traffic.records == 0:
        result.update(status="no_data", violations=[], monitors={}, report=None,
                      message=f"no captured requests for endpoint {endpoint} in the window")
        return _finish(ws, result, out, [])
    violations: list[Violation] = []
    snapshots: list[tuple[str, Any]] = []
    monitors: dict[str, Any] = {}
    monitors["data_quality"], found = _data_quality(baseline, traffic, ws)
    violations += found
    monitors["data_drift"], found, snapshot = _data_drift(baseline, traffic, ws, progress)
    violations += found
    if snapshot is not None:
        snapshot.save_html(str(out / "data_drift.html"))
        snapshots.append((f"{run} data drift", snapshot))
    labelled = _labelled(ws, endpoint, baseline, traffic)
    monitors["model_quality"], found, snapshot = _model_quality(baseline, labelled, ws, progress)
    violations += found
    if snapshot is not None:
        snapshot.save_html(str(out / "model_quality.html"))
        snapshots.append((f"{run} model quality", snapshot))
    monitors["bias_drift"], found = _bias(ws, baseline, labelled, progress)
    violations += found
    monitors["attribution_drift"], found = _attribution(baseline, traffic, ws, progress)
    violations += found
    result.update(status="violations" if violations else "ok", monitors=monitors,
                  violations=[v.to_dict() for v in violations])
    return _finish(ws, result, out, snapshots)


def _finish(ws: Workspace, result: dict[str, Any], out: Path, snapshots: list[tuple[str, Any]]) -> dict[str, Any]:
    result["finished_unix"] = time.time()
    if result["status"] != "no_data":
        result["report"] = str(write_report(result, out))
    if snapshots:
        result["evidently_project"] = add_snapshots(ws, result["endpoint"], snapshots)
    metrics = write_metrics(result, out / "metrics.prom")
    latest = ws.folder("monitoring") / "metrics" / f"{result['endpoint']}.prom"
    latest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(metrics, latest)  # the textfile collector's file: always the latest run
    result["metrics"] = str(metrics)
    (out / "violations.json").write_text(json.dumps(result["violations"], indent=2) + "\n")
    result["violations_file"] = str(out / "violations.json")
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    result["outputs"] = str(out)
    return result


def _data_quality(baseline: "Baseline", traffic: Traffic, ws: Workspace) -> tuple[dict[str, Any], list[Violation]]:
    found, observed = check_constraints(baseline.features, traffic, ws.settings.monitoring)
    return {"rows": traffic.rows, "unparseable_requests": traffic.unparseable, "features": observed}, found


def _data_drift(baseline: "Baseline", traffic: Traffic, ws: Workspace,
                progress: Progress) -> tuple[dict[str, Any], list[Violation], Any]:

    limits = ws.settings.monitoring
    if traffic.rows == 0:
        return {"note": "no readable rows in the window"}, [], None
    progress(f"data drift of {traffic.rows} rows (Evidently)")
    reference = baseline.reference()
    drift = measure_drift(reference, traffic.frame, baseline.kinds, limits.drift_threshold, limits.drift_sample_rows)
    section: dict[str, Any] = {"rows": drift.rows, "columns": drift.columns, "drifted": drift.drifted}
    notes = []
    if drift.sampled_from:
        notes.append(f"measured on a uniform sample of {drift.rows} of the window's {drift.sampled_from} rows")
    if traffic.rows < limits.min_rows:
        notes.append(f"only {traffic.rows} rows: drift scores this small are noisy")
    if notes:
        section["note"] = "; ".join(notes)
    return section, drift_violations(drift, reference, traffic.frame), drift.snapshot


def _labelled(ws: Workspace, endpoint: str, baseline: "Baseline", traffic: Traffic) -> "pd.DataFrame | None":
    """Answered rows joined to their ground-truth labels (and the labels file's other columns)."""

    labels = read_labels(ws, endpoint)
    if labels is None or traffic.rows == 0:
        return None
    answered = traffic.frame[traffic.frame[PROBABILITY].notna()]
    extra = [c for c in labels.columns if c not in answered.columns or c == ID]
    return answered.merge(labels[extra], on=ID, how="inner")


def _model_quality(baseline: "Baseline", labelled: "pd.DataFrame | None", ws: Workspace,
                   progress: Progress) -> tuple[dict[str, Any], list[Violation], Any]:

    limits = ws.settings.monitoring
    base = baseline.data["model_quality"]
    if labelled is None or labelled.empty:
        return {"rows": 0, "baseline": base, "note": "no ground-truth labels for this window's predictions "
                "(add them with `kiln monitor labels PATH`)"}, [], None
    if len(labelled) < limits.min_rows:
        return {"rows": len(labelled), "baseline": base, "note": f"{len(labelled)} labelled rows: fewer than "
                f"{limits.min_rows}, reported only"}, [], None
    progress(f"model quality on {len(labelled)} labelled rows (Evidently)")
    observed, snapshot = classification_quality(labelled[LABEL].to_numpy(), labelled[PROBABILITY].to_numpy(),
                                                base.get("threshold", THRESHOLD))
    observed["rows"] = len(labelled)
    found = quality_violations(base, observed, limits.quality_metrics, limits.quality_tolerance)
    return {"rows": len(labelled), "baseline": base, "observed": observed}, found, snapshot


def _bias(ws: Workspace, baseline: "Baseline", labelled: "pd.DataFrame | None",
          progress: Progress) -> tuple[dict[str, Any], list[Violation]]:

    base = baseline.data["bias"]
    if not base.get("protected"):
        return {"note": base.get("note") or "the model's dataset has no protected columns"}, []
    if labelled is None or labelled.empty:
        return {"note": "no ground-truth labels for this window's predictions"}, []
    sampled = len(labelled) > BIAS_ROWS
    if sampled:
        labelled = labelled.sample(n=BIAS_ROWS, random_state=0)
    frame = _with_facets(ws, baseline, labelled, base["protected"], progress)
    frame[PREDICTED] = frame[PREDICTION].astype(int)
    facets, found, note = bias_drift(base, frame, ws.settings.monitoring)
    if sampled:
        note = "; ".join(filter(None, [note, f"measured on a uniform sample of {BIAS_ROWS} labelled rows"]))
    return {"rows": len(frame), "facets": facets, **({"note": note} if note else {})}, found


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
                 progress: Progress) -> tuple[dict[str, Any], list[Violation]]:

    limits = ws.settings.monitoring
    answered = traffic.frame[traffic.frame[PROBABILITY].notna()]
    if len(answered) < limits.min_rows:
        return {"rows": len(answered), "note": f"{len(answered)} answered rows: fewer than {limits.min_rows}, "
                "too few for a SHAP ranking"}, []
    rows = answered.sample(n=min(limits.attribution_rows, len(answered)), random_state=0)
    progress(f"SHAP ranking of {len(rows)} live rows")
    live = global_ranking(baseline.data["model_uri"], rows[list(baseline.features)].reset_index(drop=True))
    before, now = importances(baseline.data["attribution"]), importances(live)
    score = round(ndcg(before, now), 6)
    ranking = [{"feature": f, "baseline": round(before[f], 6), "observed": round(now.get(f, 0.0), 6)}
               for f in sorted(before, key=lambda f: -before[f])]
    section = {"rows": len(rows), "ndcg": score, "threshold": limits.ndcg_threshold, "ranking": ranking,
               "explainer": live["explainer"]}
    found = []
    if score < limits.ndcg_threshold:
        top_before = ", ".join(r["feature"] for r in baseline.data["attribution"]["ranking"][:3])
        top_now = ", ".join(r["feature"] for r in live["ranking"][:3])
        found.append(Violation("attribution_drift", "*", "ndcg", 1.0, score, limits.ndcg_threshold,
                               f"top features were {top_before}; now {top_now}"))
    return section, found
