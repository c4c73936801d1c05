"""`kiln data ...`: generate the churn demo data, import a CSV, validate a dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from kiln.cli.command import show
from kiln.cli.output import JsonOption, err, out
from kiln.data.dates import parse_date
from kiln.data.generate import GeneratedDataset, GenerateOptions, generate_dataset, parse_drift, parse_label_bias
from kiln.data.importer import ImportedDataset, ImportOptions, import_dataset
from kiln.data.validate import ValidationReport, validate_dataset

app = typer.Typer(help="Datasets: generate, import and validate.", no_args_is_help=True, rich_markup_mode=None)

OverwriteOption = typer.Option(False, help="Replace a dataset already at --out.")


@app.command("generate")
def generate(
    out_path: Path = typer.Option(..., "--out", help="Dataset folder to write (must not exist, or pass --overwrite)."),
    customers: int = typer.Option(5000, help="Number of customers."),
    days: int = typer.Option(120, help="Days of activity to simulate."),
    seed: int = typer.Option(0, help="Random seed: the same seed gives the same data."),
    end: str | None = typer.Option(None, help="Last day of the window, YYYY-MM-DD (default: today)."),
    horizon: int = typer.Option(30, help="A label is 1 if the customer leaves within this many days."),
    drift: list[str] = typer.Option([], help="FEATURE=SHIFT[@DAY]: shift an event feature by SHIFT standard "
                                        "deviations from DAY on (default mid-window). Repeatable."),
    label_bias: list[str] = typer.Option([], help="FACET=VALUE:DELTA: raise that group's churn rate by DELTA "
                                             "(e.g. gender=female:0.1). Repeatable."),
    missing: float = typer.Option(0.0, help="Share of feature values to leave empty (0 to 1)."),
    overwrite: bool = OverwriteOption,
    as_json: bool = JsonOption,
) -> None:
    """Generate the churn demo dataset: customers, daily events and churn labels."""

    opts = GenerateOptions(
        customers=customers, days=days, seed=seed, end=parse_date(end, "--end"), horizon=horizon,
        drift=tuple(parse_drift(d) for d in drift), label_bias=tuple(parse_label_bias(b) for b in label_bias),
        missing=missing,
    )
    with err.status(f"generating {customers} customers over {days} days"):
        result = generate_dataset(opts, out_path, overwrite=overwrite)
    show(result, as_json, _render_generated)


def _render_generated(result: GeneratedDataset) -> None:
    out.print(f"wrote {result.path}")
    churn_rate = f"{result.churn_rate:.1%}" if result.churn_rate is not None else "-"
    out.print(f"  customers {result.customers}, events {result.events}, labels {result.labels}, "
              f"churn rate {churn_rate}")
    out.print(f"  window {result.window_start[:10]} .. {result.window_end[:10]}; {result.content_hash}")


@app.command("import")
def import_(
    csv: Path = typer.Argument(..., help="The CSV file to bring in."),
    entity: str = typer.Option(..., help="Column holding the entity id (e.g. customerID)."),
    label: str = typer.Option(..., help="Column holding the label: two values (e.g. Yes/No), several classes, or a "
                                        "number to predict."),
    out_path: Path = typer.Option(..., "--out", help="Dataset folder to write."),
    timestamp: str | None = typer.Option(None, help="Column holding each row's time."),
    as_of: str | None = typer.Option(None, "--as-of", help="Date all rows are stamped with, YYYY-MM-DD "
                                                          "(when there is no --timestamp; default: today)."),
    positive: str | None = typer.Option(None, help="Binary label: the value of the positive class (when not "
                                                   "obvious from yes/no, true/false, 1/0)."),
    task: str | None = typer.Option(None, help="binary, multiclass or regression (default: read from the label)."),
    favourable: str | None = typer.Option(None, help="The favourable outcome bias metrics compare groups by: classes "
                                                     "'A,B', or '>X' / '<X' for a number (default for two values: "
                                                     "the positive one)."),
    drop_duplicates: bool = typer.Option(False, "--drop-duplicates",
                                         help="Keep one of each exact duplicate row (rows that share a key but "
                                              "differ are still refused)."),
    protected: list[str] = typer.Option([], help="A protected attribute for bias analysis. Repeatable "
                                            "(default: columns named gender, sex, senior_citizen, age, ...)."),
    name: str | None = typer.Option(None, help="Dataset name (default: the CSV's file name)."),
    overwrite: bool = OverwriteOption,
    as_json: bool = JsonOption,
) -> None:
    """Import an outside tabular CSV into Kiln's dataset layout, inferring column types."""

    opts = ImportOptions(csv=csv, entity=entity, label=label, timestamp=timestamp,
                         as_of=parse_date(as_of, "--as-of"), positive=positive, protected=tuple(protected), name=name,
                         task=task, drop_duplicates=drop_duplicates, favourable=favourable)
    show(import_dataset(opts, out_path, overwrite=overwrite), as_json, _render_imported)


def _render_imported(result: ImportedDataset) -> None:
    rate = f", positive rate {result.positive_rate:.1%}" if result.positive_rate is not None else ""
    dropped = f", {result.duplicates_dropped} exact duplicate rows dropped" if result.duplicates_dropped else ""
    out.print(f"wrote {result.path}: {result.rows} rows, {result.features} features, {result.task} task{rate}{dropped}")
    classes = result.label_mapping or result.classes or "numeric"
    out.print(f"  entity {result.entity}, label {result.label} {classes}, "
              f"protected {result.protected or 'none'}", markup=False)
    for col, kind in result.columns.items():
        out.print(f"  {col}: {kind}", markup=False)


@app.command("validate")
def validate(
    path: Path = typer.Argument(..., help="The dataset folder."),
    as_json: bool = JsonOption,
) -> None:
    """Check a dataset against its schema; on failure name each column, rule and a few rows, exit 1."""

    show(validate_dataset(path), as_json, _render_validation)


def _render_validation(report: ValidationReport) -> None:
    out.print(f"[green]valid[/green]: {report.path} ({report.kind})")
    for table, rows in report.tables.items():
        out.print(f"  {table}: {rows} rows")
    note = "" if report.content_hash_matches_manifest else "  (changed since dataset.json was written)"
    out.print(f"  {report.content_hash}{note}")
