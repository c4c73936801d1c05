"""A monitor run's figures in the Prometheus text format (a node exporter's textfile collector reads them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.monitoring.violations import MONITORS

if TYPE_CHECKING:
    from kiln.monitoring.run import MonitorRun


def write_metrics(run: MonitorRun, path: Path) -> Path:
    """Write the run's gauges to ``path`` (atomically: prometheus_client writes a temporary file and renames)."""
    from prometheus_client import CollectorRegistry, write_to_textfile
    from prometheus_client.core import GaugeMetricFamily

    # Metric families, not Gauge objects: a Gauge keeps its value where PROMETHEUS_MULTIPROC_DIR says, and Feast's
    # import sets that variable, so a Gauge would fail once the variable is gone (an environment put back).
    families: list[GaugeMetricFamily] = []
    endpoint = run.endpoint

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
        families.append(GaugeMetricFamily(f"kiln_monitor_{name}", doc, labels=["endpoint", *labels]))
        return families[-1]

    gauge("last_run_timestamp_seconds", "When the monitor run ended (Unix time).").add_metric(
        [endpoint], run.finished_unix)
    gauge("rows", "Captured rows in the window.").add_metric([endpoint], run.rows)
    counts = gauge("violations", "Violations found, per monitor.", ("monitor",))
    for monitor in MONITORS:
        counts.add_metric([endpoint, monitor], sum(v.monitor == monitor for v in run.violations))
    monitors = run.monitors
    if monitors is not None and monitors.data_drift.columns:
        score = gauge("feature_drift_score", "Distance of a feature's live distribution from the baseline's.",
                      ("feature", "method"))
        for c in monitors.data_drift.columns:
            score.add_metric([endpoint, c["feature"], c["method"]], c["score"])
    quality = monitors.model_quality.observed if monitors is not None else None
    if quality:
        g = gauge("model_quality", "Model quality on labelled live rows.", ("metric",))
        for name, value in quality.items():
            if isinstance(value, (int, float)):
                g.add_metric([endpoint, name], value)
    facets = monitors.bias_drift.facets if monitors is not None else None
    if facets:
        g = gauge("bias", "Post-training bias metric on labelled live rows, by facet.", ("facet", "metric"))
        for f in facets:
            for name, pair in f["metrics"].items():
                if pair["observed"] is not None:
                    g.add_metric([endpoint, f["facet"], name], pair["observed"])
    ndcg = monitors.attribution_drift.ndcg if monitors is not None else None
    if ndcg is not None:
        gauge("attribution_ndcg", "NDCG of the live SHAP ranking against the baseline's.").add_metric([endpoint], ndcg)
    registry = CollectorRegistry()
    registry.register(_Families(families))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
    return path


class _Families:
    """A collector of metric families made once (prometheus_client's registry takes collectors)."""

    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> Iterator[Any]:
        return iter(self.families)
