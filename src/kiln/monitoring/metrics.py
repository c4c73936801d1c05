"""A monitor run's figures in the Prometheus text format (a node exporter's textfile collector reads them)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kiln.monitoring.violations import MONITORS

if TYPE_CHECKING:
    from kiln.monitoring.run import MonitorRun


def write_metrics(run: MonitorRun, path: Path) -> Path:
    """Write the run's gauges to ``path`` (atomically: prometheus_client writes a temporary file and renames)."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    endpoint = run.endpoint

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(f"kiln_monitor_{name}", doc, ("endpoint", *labels), registry=registry)

    gauge("last_run_timestamp_seconds", "When the monitor run ended (Unix time).").labels(endpoint).set(
        run.finished_unix)
    gauge("rows", "Captured rows in the window.").labels(endpoint).set(run.rows)
    counts = gauge("violations", "Violations found, per monitor.", ("monitor",))
    for monitor in MONITORS:
        counts.labels(endpoint, monitor).set(sum(v.monitor == monitor for v in run.violations))
    monitors = run.monitors
    if monitors is not None and monitors.data_drift.columns:
        score = gauge("feature_drift_score", "Distance of a feature's live distribution from the baseline's.",
                      ("feature", "method"))
        for c in monitors.data_drift.columns:
            score.labels(endpoint, c["feature"], c["method"]).set(c["score"])
    quality = monitors.model_quality.observed if monitors is not None else None
    if quality:
        g = gauge("model_quality", "Model quality on labelled live rows.", ("metric",))
        for name, value in quality.items():
            if isinstance(value, (int, float)):
                g.labels(endpoint, name).set(value)
    facets = monitors.bias_drift.facets if monitors is not None else None
    if facets:
        g = gauge("bias", "Post-training bias metric on labelled live rows, by facet.", ("facet", "metric"))
        for f in facets:
            for name, pair in f["metrics"].items():
                if pair["observed"] is not None:
                    g.labels(endpoint, f["facet"], name).set(pair["observed"])
    ndcg = monitors.attribution_drift.ndcg if monitors is not None else None
    if ndcg is not None:
        gauge("attribution_ndcg", "NDCG of the live SHAP ranking against the baseline's.").labels(endpoint).set(ndcg)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
    return path
