"""Model cards: what a version is for, what it was trained on, how well and how fairly it does, who approved it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kiln import tracking
from kiln.registry.versions import VersionInfo, get_version
from kiln.workspace import Workspace

METRICS = {
    "binary": ("auc", "pr_auc", "f1", "precision", "recall", "accuracy", "log_loss", "brier", "ece"),
    "multiclass": ("accuracy", "f1_macro", "f1_weighted", "log_loss"),
    "regression": ("rmse", "mae", "r2", "mape"),
}
USES = {
    "binary": "Scores how likely each `{entity}` of `{dataset}` is to be of the positive class of `{label}`",
    "multiclass": "Predicts the class of `{label}` (with a probability for each class) for each `{entity}` of "
                  "`{dataset}`",
    "regression": "Predicts the value of `{label}` for each `{entity}` of `{dataset}`",
}
BIAS_SHOWN = ("DPPL", "DI", "AD", "RD", "DAR", "DRR")
# The run tag training sets to its Debugger findings' artifact path (read by path: the registry imports no training).
DEBUGGER_PATH_TAG = "kiln.debugger_findings_path"


@dataclass
class ModelCard:
    model: str
    markdown: str
    markdown_path: str
    html_path: str


def _artifact(run_id: str | None, path: str) -> Any:
    """A JSON artifact of the run, or None when the run has none at that path."""
    if not run_id:
        return None
    import mlflow.artifacts

    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{path}")
    except Exception:  # noqa: BLE001 - a missing artifact is a section the card leaves out
        return None


def _num(value: Any) -> str:
    return "–" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _debugger_lines(run: Any) -> list[str]:
    """The Debugger's rules, findings and profile of the version's training, from the run's findings artifact."""
    path = run.data.tags.get(DEBUGGER_PATH_TAG) if run else None
    doc = _artifact(run.info.run_id, path) if path else None
    if not doc:
        return ["Not run for this version's training (the Debugger was off, or the model came from your own "
                "training code)."]
    evaluated = [f"{r['name']} ({r['action']})" for r in doc.get("rules", []) if r.get("evaluated")]
    lines = [f"Rules evaluated at each of {doc.get('steps')} steps of the {doc.get('family')} training (loss: "
             f"{doc.get('loss')}): {', '.join(evaluated) or 'none'}.", ""]
    lines += [f"- **{f['rule']}** ({f['action']}) at step {f['step']}: {f['message']}"
              for f in doc.get("findings", [])] or ["- no rule fired"]
    if doc.get("stopped_by"):
        lines += ["", f"Training stopped at step {doc['stopped_at']} by {doc['stopped_by']}; the model is the one "
                      "trained up to there."]
    p = doc.get("profile")
    if p:
        cpu = ["–" if v is None else f"{v:.0f}" for v in (p.get("cpu_mean"), p.get("cpu_max"))]
        lines += ["", f"Profile: {p['seconds']:.1f} s, CPU mean {cpu[0]} % (max {cpu[1]} %), peak resident memory "
                      f"{p['rss_peak_mb']:.0f} MB."]
    lines += ["", f"Report: `{doc.get('report', path)}` with the run's artifacts."]
    return lines


def render(ws: Workspace, info: VersionInfo) -> str:
    """The card as Markdown, from the version's tags and its run's metrics and artifacts."""

    t = info.tags
    run = tracking.client(ws).get_run(info.run_id) if info.run_id else None
    metrics = run.data.metrics if run else {}
    gate = _artifact(info.run_id, "evaluation/gate.json") or {}
    split = (_artifact(info.run_id, "evaluation/training_set.json") or {}).get("split", {})
    shap = _artifact(info.run_id, t["kiln.shap_baseline"]) if "kiln.shap_baseline" in t else None
    dataset, service = t.get("kiln.dataset", "the dataset"), t.get("kiln.feature_service", "-")
    task = t.get("kiln.task", "binary")
    names = METRICS[task] + tuple(sorted({k[len("test_"):] for k in metrics if k.startswith("test_recall_")}))
    quality = "auc" if task == "binary" else gate.get("gate_metric", METRICS[task][0])
    use = USES[task].format(entity=t.get("kiln.entity", "row"), dataset=dataset, label=t.get("kiln.label", "the label"))
    lines = [
        f"# Model card: {info.name} version {info.version}", "",
        f"- Aliases: {', '.join(info.aliases) or 'none'}",
        f"- Approval status: **{info.approval}**; promotion gate: **{info.gate}**",
        f"- Family: {t.get('kiln.family', '-')}; task: {task}; registered {info.created}; MLflow run `{info.run_id}`",
        "", "## Intended use", "",
        f"{use}, from the features of feature service `{service}`. Its answers support people's decisions; they are "
        "not meant to decide alone about any one case, nor to be used on populations unlike its training data.", "",
        "## Training data and lineage", "",
        f"- Dataset `{dataset}`, content hash `{t.get('kiln.dataset_content_hash', '-')}`",
        f"- Feature service `{service}` version {t.get('kiln.feature_service_version', '-') or '-'}; "
        f"views {t.get('kiln.feature_views', '-')}",
        f"- Training set `{t.get('kiln.training_set', '-')}` (`{t.get('kiln.training_set_sha256', '-')}`)",
        f"- Split: {split.get('method', '-')}; rows train {split.get('train', '-')}, validation "
        f"{split.get('valid', '-')}, test {split.get('test', '-')}",
        f"- Code: {t.get('kiln.code_version', '-')}; tuning job {t.get('kiln.tuning_job', '-')}; "
        f"parent version {t.get('kiln.parent_version') or '-'}; seed {t.get('kiln.seed', '-')}", "",
        "## Metrics (held-out rows" + (", threshold 0.5)" if task == "binary" else ")"), "",
        "| metric | validation | test |", "| --- | --- | --- |",
        *[f"| {m} | {_num(metrics.get(f'valid_{m}'))} | {_num(metrics.get(f'test_{m}'))} |" for m in names], "",
    ]
    champion = gate.get("champion") or {}
    if "metrics" in champion:
        lines += [f"Against the champion on the same {gate.get('rows')} rows: {quality} "
                  f"{_num(gate['challenger'].get(quality))} vs {_num(champion['metrics'].get(quality))} "
                  f"({champion['uri']}).", ""]
    lines += ["## Promotion gate", ""]
    lines += [f"- {'pass' if c['passed'] else 'FAIL'}: {c['name']} = {_num(c['value'])} (limit {c['limit']})"
              for c in (gate.get("gate") or {}).get("checks", [])] or ["- no gate result recorded"]
    lines += ["", "## Bias (post-training, held-out rows; each value against all others)", "",
              "| facet | rows | " + " | ".join(BIAS_SHOWN) + " |", "| --- | --- |" + " --- |" * len(BIAS_SHOWN)]
    for g in gate.get("bias", []):
        if "note" in g:
            lines.append(f"| {g['facet']} | {g['rows']} | {g['note']} |" + " |" * (len(BIAS_SHOWN) - 1))
            continue
        lines.append(f"| {g['facet']} | {g['rows']} | " +
                     " | ".join(_num(g.get("metrics", {}).get(m)) for m in BIAS_SHOWN) + " |")
    lines += ["", "## Explanations", ""]
    if shap:
        lines += [f"{shap['explainer']} on {shap['rows']} held-out rows; global ranking by mean |SHAP value|:", ""]
        lines += [f"{r['rank']}. {r['feature']} ({r['mean_abs_shap']:.4f})" for r in shap["ranking"][:10]]
    else:
        lines += [f"Not computed yet: `kiln clarify explain {info.name}/{info.version}`."]
    lines += ["", "## Debugger", "", *_debugger_lines(run)]
    lines += ["", "## Limitations", "",
              "- Measured on held-out rows of the same training set: quality on future traffic is what the monitor "
              "checks.",
              f"- Calibration error (ECE) on the test rows: {_num(metrics.get('test_ece'))}; probabilities are "
              "uncalibrated beyond what the family learns.",
              "- Facet groups with few held-out rows give noisy bias values; the gate skips groups below "
              f"{ws.settings.gates.min_facet_rows} rows.",
              "- Protected attributes are not model inputs, but other features can stand in for them.", "",
              "## Approval history", "", "| when | event | by | reason |", "| --- | --- | --- | --- |"]
    lines += [f"| {h.get('at', '')} | {h.get('event', '')} | {h.get('by', '')} | {h.get('reason', '')} |"
              for h in info.history]
    return "\n".join(lines) + "\n"


def write_card(ws: Workspace, ref: str) -> ModelCard:
    """Render the card, write it as Markdown and HTML under reports/cards, and log both with the version's run."""
    from markdown_it import MarkdownIt

    info = get_version(ws, ref)
    text = render(ws, info)
    out = ws.folder("reports") / "cards"
    out.mkdir(parents=True, exist_ok=True)
    md_path, html_path = out / f"{info.name}-v{info.version}.md", out / f"{info.name}-v{info.version}.html"
    body = MarkdownIt("commonmark").enable("table").render(text)
    html = (f"<!doctype html><html><head><meta charset='utf-8'><title>{info.name} v{info.version}</title><style>"
            "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 8px}</style></head><body>" + body + "</body></html>")
    md_path.write_text(text)
    html_path.write_text(html)
    if info.run_id:
        c = tracking.client(ws)
        for path in (md_path, html_path):
            c.log_artifact(info.run_id, str(path), "model_card")
        c.set_model_version_tag(info.name, info.version, "kiln.model_card", f"model_card/{md_path.name}")
    return ModelCard(model=f"{info.name}/{info.version}", markdown=text, markdown_path=str(md_path),
                     html_path=str(html_path))
