"""`kiln clarify ...`: bias metrics by facet and SHAP explanations."""

from __future__ import annotations

from pathlib import Path

import typer

from kiln.clarify.analysis import BiasReport, bias_report
from kiln.clarify.explain import Explanation
from kiln.clarify.explain import explain as explain_model
from kiln.cli.command import WorkspaceOption, respond
from kiln.cli.output import JsonOption, out, progress

app = typer.Typer(help="Clarify: bias metrics (pre- and post-training) and SHAP explanations.",
                  no_args_is_help=True, rich_markup_mode=None)


def _render_bias(report: BiasReport) -> None:
    out.print(f"facet {report.facet} ({report.rows} rows, label {report.label})", markup=False)
    parts = [("pre-training", report.pre_training)]
    if report.model is not None:
        parts.append((f"post-training ({report.model}, {report.holdout_rows} held-out rows)", report.post_training))
    for title, metrics in parts:
        out.print(f"  {title}:", markup=False)
        for m in metrics:
            value = "undefined" if m.value is None else f"{m.value:+.4f}"
            out.print(f"    {m.name:<6} {value:>10}  {m.description}" + (f"  ({m.note})" if m.note else ""),
                      markup=False)
    out.print(f"  report: {report.report}", markup=False)


def _render_explanation(result: Explanation) -> None:
    out.print(f"{result.model}: {result.explainer} on {result.rows} rows, base value {result.base_value:.4f}",
              markup=False)
    for r in result.global_importance[:10]:
        out.print(f"  {r['rank']:>2}. {r['feature']:<36} {r['mean_abs_shap']:.4f}", markup=False)
    out.print(f"  attributions: {result.attributions}", markup=False)
    out.print(f"  report: {result.report}", markup=False)


@app.command("bias")
def bias(
    facet: str = typer.Option(..., "--facet", help="Facet d, COLUMN=VALUE[,VALUE]: e.g. gender=female."),
    model: str | None = typer.Option(None, "--model", "-m", help="NAME@ALIAS or NAME/VERSION: adds "
                                        "post-training metrics of its predictions on its held-out rows."),
    training_set: Path | None = typer.Option(None, "--training-set", "-t",
                                                help="Training set (default: the model's own)."),
    group: str | None = typer.Option(None, "--group", help="Column to condition CDD on (strata)."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """SageMaker Clarify's bias metrics for one facet: CI, DPL, KL, JS, LP, TVD, KS, CDD; DPPL, DI, AD, RD, ..."""
    respond(workspace, as_json, lambda ws: bias_report(ws, facet, training_set, model, group, progress), _render_bias)


@app.command("explain")
def explain(
    model: str = typer.Argument(..., help="NAME@ALIAS or NAME/VERSION."),
    rows: int = typer.Option(300, "--rows", min=10, help="Held-out rows to explain."),
    seed: int = typer.Option(7, "--seed", help="Seed for the sample and the background rows."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """SHAP values per prediction and globally, partial dependence plots, an HTML report; logs the ranking."""
    respond(workspace, as_json, lambda ws: explain_model(ws, model, rows, seed, progress), _render_explanation)
