"""`kiln features ...`: Feature Store on Feast."""

from __future__ import annotations

from pathlib import Path

import typer

from kiln.cli.command import WorkspaceOption, respond
from kiln.cli.output import JsonOption, out, print_json, progress
from kiln.features.backfill import BackfillReport
from kiln.features.backfill import backfill as backfill_feature
from kiln.features.consistency import ConsistencyReport, StoresDisagree, check_consistency
from kiln.features.ingest import IngestReport
from kiln.features.ingest import ingest as ingest_dataset
from kiln.features.materialize import Materialized, parse_when
from kiln.features.materialize import materialize as materialize_views
from kiln.features.online import OnlineFeatures, get_online
from kiln.features.repo import AppliedRepo, apply_repo, default_service
from kiln.features.training import TrainingSet, build_training_set

app = typer.Typer(help="Feature Store (Feast): apply, ingest, materialize, get, training-set, check, backfill.",
                  no_args_is_help=True, rich_markup_mode=None)

ServiceOption = typer.Option(None, "--service", help="Feature service (default: the one of the only dataset "
                                                     "in the feature repo).")


@app.command("apply")
def apply(workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Write feature_store.yaml from settings and register every definition in the feature repo."""

    respond(workspace, as_json, apply_repo, _render_applied, status="applying the feature repo")


def _render_applied(applied: AppliedRepo) -> None:
    out.print(f"applied {applied.repo}")
    for kind, names in applied.objects.items():
        out.print(f"  {kind}: {', '.join(names) or '-'}", markup=False)


@app.command("ingest")
def ingest(
    path: Path = typer.Argument(..., help="The dataset folder to ingest."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Validate a dataset, compute windowed aggregates, append offline, push newest values online."""

    respond(workspace, as_json, lambda ws: ingest_dataset(ws, path, progress), _render_ingest)


def _render_ingest(report: IngestReport) -> None:
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

    window = parse_when(start, "--start"), parse_when(end, "--end")
    respond(workspace, as_json, lambda ws: materialize_views(ws, *window), _render_materialized,
            status="materializing")


def _render_materialized(result: Materialized) -> None:
    out.print(f"materialized {', '.join(result.feature_views) or 'no views'} up to {result.end.isoformat()[:16]}")


@app.command("get")
def get(
    customer: list[str] = typer.Option([], "--customer", "--id", help="Entity id; repeatable."),
    service: str | None = ServiceOption,
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Online feature values of one or more entities."""

    respond(workspace, as_json, lambda ws: get_online(ws, customer, service or default_service(ws)), _render_online)


def _render_online(result: OnlineFeatures) -> None:
    for row in result.rows:
        for name, value in row.items():
            out.print(f"{name:<36} {value}", markup=False)
        out.print("")


@app.command("training-set")
def training_set(
    labels: Path = typer.Option(..., help="Labels: a dataset folder or a parquet/CSV file (id, label_timestamp, label)."),
    service: str | None = ServiceOption,
    out_path: Path = typer.Option(..., "--out", help="Parquet file to write (a .json lineage file goes beside it)."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """A point-in-time correct training set: each label sees only feature values stamped at or before it."""

    respond(workspace, as_json, lambda ws: build_training_set(ws, labels, service or default_service(ws), out_path),
            _render_training_set, status="joining features as of each label time")


def _render_training_set(result: TrainingSet) -> None:
    rate = "" if result.label_rate is None else f", label {'mean' if result.task['kind'] == 'regression' else 'rate'} " \
                                                 f"{result.label_rate}"
    out.print(f"wrote {result.path}: {result.rows} rows, {len(result.features)} features, {result.task['kind']} "
              f"task{rate}")
    out.print(f"  lineage: {result.path}.json")


@app.command("check")
def check(
    sample: int = typer.Option(100, help="Entities to compare per feature view.", min=1),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Online/offline consistency: each sampled entity's online values equal its newest offline ones."""

    try:
        respond(workspace, as_json, lambda ws: check_consistency(ws, sample), _render_consistency,
                status="comparing the online store with the offline store")
    except StoresDisagree as exc:
        if as_json:  # the differences as a document too; the error itself goes to stderr with exit code 2
            print_json({"consistent": False, "differences": exc.differences})
        raise


def _render_consistency(report: ConsistencyReport) -> None:
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

    respond(workspace, as_json, lambda ws: backfill_feature(ws, view, data), _render_backfill,
            status=f"backfilling {view}")


def _render_backfill(report: BackfillReport) -> None:
    out.print(f"backfilled {', '.join(report.features)} of {report.view}: {report.rows_updated} of "
              f"{report.rows_total} stored rows ({report.entities} entities); online {report.online_rows}")
