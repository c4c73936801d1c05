"""A monitor run's figures in the Prometheus text format (a node exporter's textfile collector reads them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln.monitoring.violations import MONITORS


def write_metrics(result: dict[str, Any], path: Path) -> Path:
    """Write the run's gauges to ``path`` (atomically: prometheus_client writes a temporary file and renames)."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    endpoint = result["endpoint"]

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(f"kiln_monitor_{name}", doc, ("endpoint", *labels), registry=registry)

    gauge("last_run_timestamp_seconds", "When the monitor run ended (Unix time).").labels(endpoint).set(
        result["finished_unix"])
    gauge("rows", "Captured rows in the window.").labels(endpoint).set(result["rows"])
    counts = gauge("violations", "Violations found, per monitor.", ("monitor",))
    for monitor in MONITORS:
        counts.labels(endpoint, monitor).set(sum(v["monitor"] == monitor for v in result["violations"]))
    monitors = result.get("monitors", {})
    drift = monitors.get("data_drift", {})
    if drift.get("columns"):
        score = gauge("feature_drift_score", "Distance of a feature's live distribution from the baseline's.",
                      ("feature", "method"))
        for c in drift["columns"]:
            score.labels(endpoint, c["feature"], c["method"]).set(c["score"])
    quality = monitors.get("model_quality", {}).get("observed") or {}
    if quality:
        g = gauge("model_quality", "Model quality on labelled live rows.", ("metric",))
        for name, value in quality.items():
            if isinstance(value, (int, float)):
                g.labels(endpoint, name).set(value)
    facets = monitors.get("bias_drift", {}).get("facets") or []
    if facets:
        g = gauge("bias", "Post-training bias metric on labelled live rows, by facet.", ("facet", "metric"))
        for f in facets:
            for name, pair in f["metrics"].items():
                if pair["observed"] is not None:
                    g.labels(endpoint, f["facet"], name).set(pair["observed"])
    ndcg = monitors.get("attribution_drift", {}).get("ndcg")
    if ndcg is not None:
        gauge("attribution_ndcg", "NDCG of the live SHAP ranking against the baseline's.").labels(endpoint).set(ndcg)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
    return path
