"""A monitor run's HTML page: the window, each monitor's findings and the violations, beside Evidently's reports."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

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


def write_report(result: dict[str, Any], out: Path) -> Path:
    monitors = result["monitors"]
    parts = [f"<h1>Monitor run {escape(result['run'])}</h1>",
             f"<p>Endpoint <b>{escape(result['endpoint'])}</b>, model {escape(result['model'])}; window "
             f"{_fmt(result['window']['since'])} to {_fmt(result['window']['until'])}; {result['records']} requests, "
             f"{result['rows']} rows.</p>"]
    count = len(result["violations"])
    parts.append(f"<h2 class={'bad' if count else 'ok'}>{count} violation{'s' if count != 1 else ''}</h2>")
    if count:
        parts.append(_table(["monitor", "feature", "metric", "baseline", "observed", "threshold", "detail"],
                            [[v["monitor"], v["feature"], v["metric"], v["baseline"], v["observed"], v["threshold"],
                              v["detail"]] for v in result["violations"]]))
    drift = monitors["data_drift"]
    parts.append("<h2>Data drift</h2>")
    if drift.get("note"):
        parts.append(f"<p>{escape(drift['note'])}</p>")
    if drift.get("columns"):
        parts.append(f"<p>{drift['rows']} rows measured. <a href='data_drift.html'>Evidently's drift report</a></p>")
        parts.append(_table(["feature", "type", "method", "score", "threshold"],
                            [[c["feature"], c["type"], c["method"], c["score"], c["threshold"]]
                             for c in drift["columns"]], [c["drifted"] for c in drift["columns"]]))
    for key, title in (("model_quality", "Model quality"), ("bias_drift", "Bias drift"),
                       ("attribution_drift", "Attribution drift")):
        section = monitors[key]
        parts.append(f"<h2>{title}</h2>")
        if section.get("note"):
            parts.append(f"<p>{escape(section['note'])}</p>")
        if key == "model_quality" and section.get("observed"):
            base = section.get("baseline") or {}
            names = [n for n in ("roc_auc", "accuracy", "precision", "recall", "f1", "log_loss")
                     if n in section["observed"]]
            parts.append(f"<p>{section['rows']} labelled rows. <a href='model_quality.html'>Evidently's "
                         "classification report</a></p>")
            parts.append(_table(["metric", "baseline", "observed"],
                                [[n, base.get(n), section["observed"][n]] for n in names]))
        if key == "bias_drift" and section.get("facets"):
            rows = [[f["facet"], f["rows"], name, pair["baseline"], pair["observed"]]
                    for f in section["facets"] for name, pair in f["metrics"].items()]
            parts.append(_table(["facet", "rows", "metric", "baseline", "observed"], rows))
        if key == "attribution_drift" and section.get("ndcg") is not None:
            parts.append(f"<p>NDCG {section['ndcg']:.4f} (threshold {section['threshold']}) on "
                         f"{section['rows']} rows.</p>")
            parts.append(_table(["feature", "baseline mean |SHAP|", "live mean |SHAP|"],
                                [[r["feature"], r["baseline"], r["observed"]] for r in section["ranking"]]))
    html = (f"<!doctype html><html><head><meta charset='utf-8'><title>Monitor {escape(result['endpoint'])}"
            f"</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    path = out / "report.html"
    path.write_text(html)
    return path
