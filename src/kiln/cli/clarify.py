"""`kiln clarify ...`: bias metrics by facet and SHAP explanations."""

from __future__ import annotations

from pathlib import Path

import typer

from kiln.clarify.analysis import bias_report
from kiln.clarify.explain import explain as run
from kiln.cli.command import WorkspaceOption
from kiln.cli.output import JsonOption, engine_output, out, print_json, progress
from kiln.workspace import open_workspace

app = typer.Typer(help="Clarify: bias metrics (pre- and post-training) and SHAP explanations.",
                  no_args_is_help=True, rich_markup_mode=None)


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

    ws = open_workspace(workspace)
    with engine_output():
        result = bias_report(ws, facet, training_set, model, group, progress)
    if as_json:
        print_json(result)
        return
    out.print(f"facet {result['facet']} ({result['rows']} rows, label {result['label']})", markup=False)
    for part in ("pre_training", "post_training"):
        if part not in result:
            continue
        title = part.replace("_", "-") + (f" ({result['model']}, {result['holdout_rows']} held-out rows)"
                                          if part == "post_training" else "")
        out.print(f"  {title}:", markup=False)
        for m in result[part]:
            value = "undefined" if m["value"] is None else f"{m['value']:+.4f}"
            out.print(f"    {m['name']:<6} {value:>10}  {m['description']}" + (f"  ({m['note']})" if m["note"] else ""),
                      markup=False)
    out.print(f"  report: {result['report']}", markup=False)


@app.command("explain")
def explain(
    model: str = typer.Argument(..., help="NAME@ALIAS or NAME/VERSION."),
    rows: int = typer.Option(300, "--rows", min=10, help="Held-out rows to explain."),
    seed: int = typer.Option(7, "--seed", help="Seed for the sample and the background rows."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """SHAP values per prediction and globally, partial dependence plots, an HTML report; logs the ranking."""

    ws = open_workspace(workspace)
    with engine_output():
        result = run(ws, model, rows, seed, progress)
    if as_json:
        print_json(result)
        return
    out.print(f"{result.model}: {result.explainer} on {result.rows} rows, base value {result.base_value:.4f}",
              markup=False)
    for r in result.global_importance[:10]:
        out.print(f"  {r['rank']:>2}. {r['feature']:<36} {r['mean_abs_shap']:.4f}", markup=False)
    out.print(f"  attributions: {result.attributions}", markup=False)
    out.print(f"  report: {result.report}", markup=False)
