"""`kiln models ...`: the model registry on MLflow (versions, aliases, approval, promotion, model cards)."""

from __future__ import annotations

import getpass
from pathlib import Path

import typer

from kiln.cli.command import WorkspaceOption, respond
from kiln.cli.output import JsonOption, out, progress
from kiln.evaluation.candidate import Registration, register_run_model
from kiln.registry.card import ModelCard, write_card
from kiln.registry.versions import Promotion, VersionInfo, get_version, list_versions, set_approval
from kiln.registry.versions import promote as promote_version
from kiln.registry.versions import rollback as rollback_champion

app = typer.Typer(help="Model registry (MLflow): list, show, register, approve, reject, promote, rollback, card.",
                  no_args_is_help=True, rich_markup_mode=None)

RefArgument = typer.Argument(..., help="NAME@ALIAS (e.g. churn@champion) or NAME/VERSION (e.g. churn/3).")
ReasonOption = typer.Option(..., "--reason", "-r", help="Why: kept in the version's approval history.")
ByOption = typer.Option(None, "--by", help="Who decides (default: the current user).")


def _who(by: str | None) -> str:
    return by or getpass.getuser()


def _line(v: VersionInfo) -> str:
    aliases = ",".join(v.aliases) or "-"
    metric, score = next(((k[len("kiln.test_"):], val) for k, val in v.tags.items() if k.startswith("kiln.test_")),
                         ("auc", "-"))
    return (f"{v.name}/{v.version:<4} {aliases:<28} {v.approval:<22} gate {v.gate:<7} "
            f"{metric} {score or '-':<7} {v.tags.get('kiln.family', '-'):<5} {v.created}")


def _render_versions(versions: list[VersionInfo]) -> None:
    if not versions:
        out.print("no registered models yet (`kiln tune` registers the best model)")
    for v in versions:
        out.print(_line(v), markup=False)


def _render_version(v: VersionInfo) -> None:
    out.print(_line(v), markup=False)
    out.print(f"  source: {v.source}  run: {v.run_id}", markup=False)
    for key in sorted(k for k in v.tags if k.startswith("kiln.") and k not in ("kiln.approval_history",)):
        out.print(f"  {key}: {v.tags[key]}", markup=False)
    for h in v.history:
        out.print(f"  {h.get('at')}  {h.get('event')}  {h.get('by', '')}  {h.get('reason', '')}", markup=False)


def render_registration(registered: Registration) -> None:
    """A registered version, the gate's reasons and how it compares with the champion."""
    version, evaluation = registered.version, registered.evaluation
    out.print(f"registered {version.name} version {version.version} as {', '.join(version.aliases)}; "
              f"{version.approval}; gate {version.gate}", markup=False)
    for reason in evaluation.decision.reasons if evaluation.decision else []:
        out.print(f"  gate: {reason}", markup=False)
    metric = evaluation.metric
    ours, theirs = evaluation.challenger.get(metric), (evaluation.champion or {}).get("metrics", {}).get(metric)
    if ours is not None and theirs is not None:
        out.print(f"  test {metric} {ours:.4f} against the champion's {theirs:.4f} on the same {evaluation.rows} rows",
                  markup=False)


def _render_approval(v: VersionInfo) -> None:
    out.print(f"{v.name} version {v.version}: {v.approval}", markup=False)


def _render_promotion(p: Promotion) -> None:
    v = p.champion
    out.print(f"{v.name} version {v.version} is the champion" +
              (f"; version {p.previous_champion} is previous-champion" if p.previous_champion else ""), markup=False)


def _render_rollback(v: VersionInfo) -> None:
    out.print(f"{v.name} version {v.version} is the champion again", markup=False)


def _render_card(card: ModelCard) -> None:
    out.print(card.markdown, markup=False)
    out.print(f"written: {card.markdown_path}\n         {card.html_path}", markup=False)


@app.command("list")
def list_(name: str | None = typer.Argument(None, help="One registered model (default: all)."),
          workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Every version with its aliases, approval status, gate result and test AUC, newest first."""
    respond(workspace, as_json, lambda ws: list_versions(ws, name), _render_versions)


@app.command("show")
def show(ref: str = RefArgument, workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """One version: aliases, approval and its history, gate result, lineage."""
    respond(workspace, as_json, lambda ws: get_version(ws, ref), _render_version)


@app.command("register")
def register(
    run_id: str = typer.Argument(..., help="The MLflow run of `kiln train` or `kiln tune` whose model to register."),
    name: str | None = typer.Option(None, "--name", "-n", help="Registered model name (default: the name of the "
                                                                "dataset the run trained on)."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Evaluate a run's model against the champion on held-out rows and register it with alias challenger."""
    respond(workspace, as_json, lambda ws: register_run_model(ws, name, run_id, progress), render_registration)


@app.command("approve")
def approve(ref: str = RefArgument, reason: str = ReasonOption, by: str | None = ByOption,
            workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Set a version's approval status to Approved."""
    respond(workspace, as_json, lambda ws: set_approval(ws, ref, "Approved", reason, _who(by)), _render_approval)


@app.command("reject")
def reject(ref: str = RefArgument, reason: str = ReasonOption, by: str | None = ByOption,
           workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Set a version's approval status to Rejected."""
    respond(workspace, as_json, lambda ws: set_approval(ws, ref, "Rejected", reason, _who(by)), _render_approval)


@app.command("promote")
def promote(ref: str = RefArgument, by: str | None = ByOption, workspace: Path | None = WorkspaceOption,
            as_json: bool = JsonOption) -> None:
    """Make an Approved version that passed the gate the champion; the old champion stays as previous-champion."""
    respond(workspace, as_json, lambda ws: promote_version(ws, ref, _who(by)), _render_promotion)


@app.command("rollback")
def rollback(name: str = typer.Argument(..., help="Registered model name."), by: str | None = ByOption,
             workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Make previous-champion the champion again."""
    respond(workspace, as_json, lambda ws: rollback_champion(ws, name, _who(by)), _render_rollback)


@app.command("card")
def card(ref: str = RefArgument, workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Write the version's model card (Markdown and HTML), log it with the version, and show it."""
    respond(workspace, as_json, lambda ws: write_card(ws, ref), _render_card)
