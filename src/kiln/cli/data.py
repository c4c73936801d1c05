"""`kiln data ...`: generate the churn demo data, import a CSV, validate a dataset."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import typer

from kiln.cli.output import JsonOption, err, out, print_json
from kiln.data.dataset import check_destination, staged_dataset, write_dataset
from kiln.data.generate import GenerateOptions, generate_churn, parse_drift, parse_label_bias
from kiln.data.importer import ImportOptions, import_csv
from kiln.data.schema import CHURN_SCHEMA
from kiln.data.validate import validate_dataset
from kiln.errors import InputError

app = typer.Typer(help="Datasets: generate, import and validate.", no_args_is_help=True, rich_markup_mode=None)


def _date(value: str | None, flag: str) -> date | None:
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise InputError(f"{flag} '{value}': expected a date as YYYY-MM-DD") from None


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
    overwrite: bool = typer.Option(False, help="Replace a dataset already at --out."),
    as_json: bool = JsonOption,
) -> None:
    """Generate the churn demo dataset: customers, daily events and churn labels."""

    opts = GenerateOptions(
        customers=customers, days=days, seed=seed, end=_date(end, "--end"), horizon=horizon,
        drift=tuple(parse_drift(d) for d in drift), label_bias=tuple(parse_label_bias(b) for b in label_bias),
        missing=missing,
    )
    opts.check()
    with err.status(f"generating {customers} customers over {days} days"), \
            staged_dataset(out_path, overwrite) as stage:
        frames, stats = generate_churn(opts)
        source = {"generator": "kiln.data.generate", "customers": customers, "days": days, "seed": seed,
                  "end": str(opts.end) if opts.end else None, "horizon": horizon, "drift": drift,
                  "label_bias": label_bias, "missing": missing}
        manifest = write_dataset(stage, "churn", CHURN_SCHEMA, frames, source, stats)
    result = {"path": str(out_path.resolve()), "content_hash": manifest["content_hash"], **stats}
    if as_json:
        print_json(result)
        return
    out.print(f"wrote {out_path.resolve()}")
    out.print(f"  customers {stats['customers']}, events {stats['events']}, labels {stats['labels']}, "
              f"churn rate {stats['churn_rate']:.1%}")
    out.print(f"  window {stats['window_start'][:10]} .. {stats['window_end'][:10]}; {manifest['content_hash']}")


@app.command("import")
def import_(
    csv: Path = typer.Argument(..., help="The CSV file to bring in."),
    entity: str = typer.Option(..., help="Column holding the entity id (e.g. customerID)."),
    label: str = typer.Option(..., help="Column holding the label (two values, e.g. Yes/No)."),
    out_path: Path = typer.Option(..., "--out", help="Dataset folder to write."),
    timestamp: str | None = typer.Option(None, help="Column holding each row's time."),
    as_of: str | None = typer.Option(None, "--as-of", help="Date all rows are stamped with, YYYY-MM-DD "
                                                          "(when there is no --timestamp; default: today)."),
    positive: str | None = typer.Option(None, help="The label value that means 'churned' (when not obvious)."),
    protected: list[str] = typer.Option([], help="A protected attribute for bias analysis. Repeatable "
                                            "(default: columns named gender, sex, senior_citizen, age, ...)."),
    name: str | None = typer.Option(None, help="Dataset name (default: the CSV's file name)."),
    overwrite: bool = typer.Option(False, help="Replace a dataset already at --out."),
    as_json: bool = JsonOption,
) -> None:
    """Import an outside tabular CSV into Kiln's dataset layout, inferring column types."""

    check_destination(out_path, overwrite)
    opts = ImportOptions(csv=csv, entity=entity, label=label, timestamp=timestamp, as_of=_date(as_of, "--as-of"),
                         positive=positive, protected=tuple(protected), name=name)
    schema, frames, source, stats = import_csv(opts)
    with staged_dataset(out_path, overwrite) as stage:
        manifest = write_dataset(stage, "imported", schema, frames, source, stats)
    columns = {c.name: c.dtype + (f" {c.categories}" if c.categories else "") for c in schema.table("entities").columns}
    result = {"path": str(out_path.resolve()), "content_hash": manifest["content_hash"], "entity": schema.entity,
              "label": schema.label, "label_mapping": source["label_mapping"], "protected": schema.protected(),
              "columns": columns, **stats}
    if as_json:
        print_json(result)
        return
    out.print(f"wrote {out_path.resolve()}: {stats['rows']} rows, {stats['features']} features, "
              f"churn rate {stats['churn_rate']:.1%}")
    out.print(f"  entity {schema.entity}, label {schema.label} {source['label_mapping']}, "
              f"protected {schema.protected() or 'none'}", markup=False)
    for col, kind in columns.items():
        out.print(f"  {col}: {kind}", markup=False)


@app.command("validate")
def validate(
    path: Path = typer.Argument(..., help="The dataset folder."),
    as_json: bool = JsonOption,
) -> None:
    """Check a dataset against its schema; on failure name each column, rule and a few rows, exit 1."""

    report = validate_dataset(path)
    if as_json:
        print_json({"valid": True, **report.__dict__})
        return
    out.print(f"[green]valid[/green]: {report.path} ({report.kind})")
    for table, rows in report.tables.items():
        out.print(f"  {table}: {rows} rows")
    note = "" if report.content_hash_matches_manifest else "  (changed since dataset.json was written)"
    out.print(f"  {report.content_hash}{note}")
