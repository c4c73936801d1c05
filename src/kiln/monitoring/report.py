"""A monitor run's HTML page: the window, each monitor's findings and the violations, beside Evidently's reports."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.monitoring.run import MonitorRun

STYLE = ("body{font-family:sans-serif;margin:2em;max-width:70em}td,th{padding:2px 10px;text-align:left}"
         "tr.bad td{color:#a40000}.ok{color:#2a7a2a}.bad{color:#a40000}table{border-collapse:collapse}"
         "th{border-bottom:1px solid #999}")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))


def _table(headers: list[str], rows: list[list[Any]], bad: list[bool] | None = None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(f"<tr{' class=bad' if bad and bad[i] else ''}>" + "".join(f"<td>{_fmt(v)}</td>" for v in row)
                   + "</tr>" for i, row in enumerate(rows))
    return f"<table><tr>{head}</tr>{body}</table>"


def _section(title: str, note: str | None) -> list[str]:
    return [f"<h2>{title}</h2>", *([f"<p>{escape(note)}</p>"] if note else [])]


def write_report(run: MonitorRun, path: Path) -> Path:
    """Write the page of a run that had data (its monitors' findings) to ``path``."""
    monitors = run.monitors
    assert monitors is not None  # a run without data has no report
    window = run.window.to_dict()
    parts = [f"<h1>Monitor run {escape(run.run)}</h1>",
             f"<p>Endpoint <b>{escape(run.endpoint)}</b>, model {escape(run.model)}; window "
             f"{_fmt(window['since'])} to {_fmt(window['until'])}; {run.records} requests, {run.rows} rows.</p>"]
    count = len(run.violations)
    parts.append(f"<h2 class={'bad' if count else 'ok'}>{count} violation{'s' if count != 1 else ''}</h2>")
    if count:
        parts.append(_table(["monitor", "feature", "metric", "baseline", "observed", "threshold", "detail"],
                            [[v.monitor, v.feature, v.metric, v.baseline, v.observed, v.threshold, v.detail]
                             for v in run.violations]))
    drift = monitors.data_drift
    parts += _section("Data drift", drift.note)
    if drift.columns:
        parts.append(f"<p>{drift.rows} rows measured. <a href='data_drift.html'>Evidently's drift report</a></p>")
        parts.append(_table(["feature", "type", "method", "score", "threshold"],
                            [[c["feature"], c["type"], c["method"], c["score"], c["threshold"]]
                             for c in drift.columns], [c["drifted"] for c in drift.columns]))
    quality = monitors.model_quality
    parts += _section("Model quality", quality.note)
    if quality.observed:
        base = quality.baseline or {}
        names = [n for n in quality.observed if n != "rows" and isinstance(quality.observed[n], (int, float, type(None)))]
        parts.append(f"<p>{quality.rows} labelled rows. <a href='model_quality.html'>Evidently's "
                     "model quality report</a></p>")
        parts.append(_table(["metric", "baseline", "observed"], [[n, base.get(n), quality.observed[n]] for n in names]))
    bias = monitors.bias_drift
    parts += _section("Bias drift", bias.note)
    if bias.facets:
        rows = [[f["facet"], f["rows"], name, pair["baseline"], pair["observed"]]
                for f in bias.facets for name, pair in f["metrics"].items()]
        parts.append(_table(["facet", "rows", "metric", "baseline", "observed"], rows))
    attribution = monitors.attribution_drift
    parts += _section("Attribution drift", attribution.note)
    if attribution.ndcg is not None:
        parts.append(f"<p>NDCG {attribution.ndcg:.4f} (threshold {attribution.threshold}) on "
                     f"{attribution.rows} rows.</p>")
        parts.append(_table(["feature", "baseline mean |SHAP|", "live mean |SHAP|"],
                            [[r["feature"], r["baseline"], r["observed"]] for r in attribution.ranking or []]))
    html = (f"<!doctype html><html><head><meta charset='utf-8'><title>Monitor {escape(run.endpoint)}"
            f"</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    path.write_text(html)
    return path
