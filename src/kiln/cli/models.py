"""`kiln models ...`: the model registry on MLflow (versions, aliases, approval, promotion, model cards)."""

from __future__ import annotations

import getpass
from pathlib import Path

import typer

from kiln.cli.command import WorkspaceOption
from kiln.cli.output import JsonOption, engine_output, out, print_json, progress
from kiln.evaluation.candidate import register_run_model
from kiln.registry.card import write_card
from kiln.registry.versions import get_version, list_versions, set_approval
from kiln.registry.versions import promote as promote_version
from kiln.registry.versions import rollback as rollback_champion
from kiln.workspace import open_workspace

app = typer.Typer(help="Model registry (MLflow): list, show, register, approve, reject, promote, rollback, card.",
                  no_args_is_help=True, rich_markup_mode=None)

RefArgument = typer.Argument(..., help="NAME@ALIAS (e.g. churn@challenger) or NAME/VERSION (e.g. churn/3).")
ReasonOption = typer.Option(..., "--reason", "-r", help="Why: kept in the version's approval history.")
ByOption = typer.Option(None, "--by", help="Who decides (default: the current user).")


def _who(by: str | None) -> str:
    return by or getpass.getuser()


def _line(v) -> str:
    aliases = ",".join(v.aliases) or "-"
    return (f"{v.name}/{v.version:<4} {aliases:<28} {v.approval:<22} gate {v.gate:<7} "
            f"auc {v.tags.get('kiln.test_auc', '-'):<7} {v.tags.get('kiln.family', '-'):<5} {v.created}")


@app.command("list")
def list_(name: str | None = typer.Argument(None, help="One registered model (default: all)."),
          workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Every version with its aliases, approval status, gate result and test AUC, newest first."""

    ws = open_workspace(workspace)
    with engine_output():
        versions = list_versions(ws, name)
    if as_json:
        print_json(versions)
        return
    if not versions:
        out.print("no registered models yet (`kiln tune` registers the best model)")
    for v in versions:
        out.print(_line(v), markup=False)


@app.command("show")
def show(ref: str = RefArgument, workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """One version: aliases, approval and its history, gate result, lineage."""

    ws = open_workspace(workspace)
    with engine_output():
        v = get_version(ws, ref)
    if as_json:
        print_json(v)
        return
    out.print(_line(v), markup=False)
    out.print(f"  source: {v.source}  run: {v.run_id}", markup=False)
    for key in sorted(k for k in v.tags if k.startswith("kiln.") and k not in ("kiln.approval_history",)):
        out.print(f"  {key}: {v.tags[key]}", markup=False)
    for h in v.history:
        out.print(f"  {h.get('at')}  {h.get('event')}  {h.get('by', '')}  {h.get('reason', '')}", markup=False)


@app.command("register")
def register(
    run_id: str = typer.Argument(..., help="The MLflow run of `kiln train` or `kiln tune` whose model to register."),
    name: str = typer.Option("churn", "--name", "-n", help="Registered model name."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Evaluate a run's model against the champion on held-out rows and register it with alias challenger."""

    ws = open_workspace(workspace)
    with engine_output():
        version, evaluation = register_run_model(ws, name, run_id, progress)
    _print_registered(version, evaluation, as_json)


def _print_registered(version, evaluation, as_json: bool) -> None:
    if as_json:
        print_json({"version": version, "evaluation": evaluation.to_dict()})
        return
    out.print(f"registered {version.name} version {version.version} as {', '.join(version.aliases)}; "
              f"{version.approval}; gate {version.gate}", markup=False)
    for reason in evaluation.decision.reasons:
        out.print(f"  gate: {reason}", markup=False)
    if evaluation.champion and "metrics" in evaluation.champion:
        out.print(f"  test AUC {evaluation.challenger['auc']:.4f} against the champion's "
                  f"{evaluation.champion['metrics']['auc']:.4f} on the same {evaluation.rows} rows", markup=False)


@app.command("approve")
def approve(ref: str = RefArgument, reason: str = ReasonOption, by: str | None = ByOption,
            workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Set a version's approval status to Approved."""
    _approval(ref, "Approved", reason, by, workspace, as_json)


@app.command("reject")
def reject(ref: str = RefArgument, reason: str = ReasonOption, by: str | None = ByOption,
           workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Set a version's approval status to Rejected."""
    _approval(ref, "Rejected", reason, by, workspace, as_json)


def _approval(ref: str, status: str, reason: str, by: str | None, workspace: Path | None,
              as_json: bool) -> None:

    ws = open_workspace(workspace)
    with engine_output():
        v = set_approval(ws, ref, status, reason, _who(by))
    if as_json:
        print_json(v)
        return
    out.print(f"{v.name} version {v.version}: {v.approval}", markup=False)


@app.command("promote")
def promote(ref: str = RefArgument, by: str | None = ByOption, workspace: Path | None = WorkspaceOption,
            as_json: bool = JsonOption) -> None:
    """Make an Approved version that passed the gate the champion; the old champion stays as previous-champion."""

    ws = open_workspace(workspace)
    with engine_output():
        v, previous = promote_version(ws, ref, _who(by))
    if as_json:
        print_json({"champion": v, "previous_champion": previous})
        return
    out.print(f"{v.name} version {v.version} is the champion" +
              (f"; version {previous} is previous-champion" if previous else ""), markup=False)


@app.command("rollback")
def rollback(name: str = typer.Argument(..., help="Registered model name."), by: str | None = ByOption,
             workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Make previous-champion the champion again."""

    ws = open_workspace(workspace)
    with engine_output():
        v = rollback_champion(ws, name, _who(by))
    if as_json:
        print_json(v)
        return
    out.print(f"{v.name} version {v.version} is the champion again", markup=False)


@app.command("card")
def card(ref: str = RefArgument, workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Write the version's model card (Markdown and HTML), log it with the version, and show it."""

    ws = open_workspace(workspace)
    with engine_output():
        result = write_card(ws, ref)
    if as_json:
        print_json(result)
        return
    out.print(result.markdown, markup=False)
    out.print(f"written: {result.markdown_path}\n         {result.html_path}", markup=False)
