"""`kiln features ...`: Feature Store on Feast."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer

from kiln.cli.command import WorkspaceOption
from kiln.cli.output import JsonOption, err, out, print_json, progress
from kiln.errors import InputError
from kiln.features.backfill import backfill as backfill_feature
from kiln.features.consistency import StoresDisagree, check_consistency
from kiln.features.ingest import ingest as ingest_dataset
from kiln.features.materialize import materialize as materialize_views
from kiln.features.online import get_online
from kiln.features.repo import apply_repo, repo_path
from kiln.features.training import build_training_set
from kiln.workspace import open_workspace

app = typer.Typer(help="Feature Store (Feast): apply, ingest, materialize, get, training-set, check, backfill.",
                  no_args_is_help=True, rich_markup_mode=None)


def _when(value: str | None, flag: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"{flag} '{value}': expected a date or time like 2026-01-31 or 2026-01-31T12:00") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@app.command("apply")
def apply(workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Write feature_store.yaml from settings and register every definition in the feature repo."""

    ws = open_workspace(workspace)
    with err.status("applying the feature repo"):
        applied = apply_repo(ws)
    if as_json:
        print_json({"repo": str(repo_path(ws)), **applied})
        return
    out.print(f"applied {repo_path(ws)}")
    for kind, names in applied.items():
        out.print(f"  {kind}: {', '.join(names) or '-'}", markup=False)


@app.command("ingest")
def ingest(
    path: Path = typer.Argument(..., help="The dataset folder to ingest."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Validate a dataset, compute windowed aggregates, append offline, push newest values online."""

    ws = open_workspace(workspace)
    report = ingest_dataset(ws, path, progress)
    if as_json:
        print_json(report)
        return
    out.print(f"ingested {report.dataset} into service {report.feature_service} in {report.seconds}s")
    for table, rows in report.offline_rows.items():
        out.print(f"  offline {table}: {rows} rows in {report.offline_partitions[table]} partitions")
    for view, rows in report.online_rows.items():
        out.print(f"  online {view}: {rows} entities")


@app.command("materialize")
def materialize(
    start: str | None = typer.Option(None, help="From this time (default: incremental, from the last run)."),
    end: str | None = typer.Option(None, help="Up to this time (default: now)."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Load the offline store's newest values into the online store (Feast materialize)."""

    with err.status("materializing"):
        result = materialize_views(open_workspace(workspace), _when(start, "--start"), _when(end, "--end"))
    if as_json:
        print_json(result)
        return
    out.print(f"materialized {', '.join(result['feature_views']) or 'no views'} up to {result['end'][:16]}")


@app.command("get")
def get(
    customer: list[str] = typer.Option([], "--customer", "--id", help="Entity id; repeatable."),
    service: str = typer.Option("churn_v1", help="Feature service to read."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Online feature values of one or more entities."""

    result = get_online(open_workspace(workspace), customer, service)
    if as_json:
        print_json(result)
        return
    for row in result["rows"]:
        for name, value in row.items():
            out.print(f"{name:<36} {value}", markup=False)
        out.print("")


@app.command("training-set")
def training_set(
    labels: Path = typer.Option(..., help="Labels: a dataset folder or a parquet/CSV file (id, label_timestamp, label)."),
    service: str = typer.Option("churn_v1", help="Feature service naming the features."),
    out_path: Path = typer.Option(..., "--out", help="Parquet file to write (a .json lineage file goes beside it)."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """A point-in-time correct training set: each label sees only feature values stamped at or before it."""

    with err.status("joining features as of each label time"):
        result = build_training_set(open_workspace(workspace), labels, service, out_path)
    if as_json:
        print_json(result)
        return
    out.print(f"wrote {result.path}: {result.rows} rows, {len(result.features)} features, "
              f"label rate {result.label_rate}")
    out.print(f"  lineage: {result.path}.json")


@app.command("check")
def check(
    sample: int = typer.Option(100, help="Entities to compare per feature view.", min=1),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Online/offline consistency: each sampled entity's online values equal its newest offline ones."""

    try:
        with err.status("comparing the online store with the offline store"):
            report = check_consistency(open_workspace(workspace), sample)
    except StoresDisagree as exc:
        if as_json:
            print_json({"consistent": False, "differences": exc.differences})
        raise
    if as_json:
        print_json({"consistent": True, **report.__dict__})
        return
    out.print(f"[green]consistent[/green]: {report.checked_values} values of {report.checked_entities} entities "
              f"in {', '.join(report.views) or 'no views'}")


@app.command("backfill")
def backfill(
    view: str = typer.Argument(..., help="The feature view that gained the feature(s)."),
    data: Path = typer.Option(..., help="CSV or parquet: the id column, optionally event_timestamp, and the values."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Schema evolution: write values of a newly added feature into the view's history and online store."""

    with err.status(f"backfilling {view}"):
        report = backfill_feature(open_workspace(workspace), view, data)
    if as_json:
        print_json(report)
        return
    out.print(f"backfilled {', '.join(report.features)} of {report.view}: {report.rows_updated} of "
              f"{report.rows_total} stored rows ({report.entities} entities); online {report.online_rows}")
