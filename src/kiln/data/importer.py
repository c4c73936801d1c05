"""Bringing an outside tabular CSV (one row per entity, or per entity and time) into Kiln's layout.

Types are inferred per column: numbers (int or float; blanks become nulls), timestamps for
the ``--timestamp`` column, and text, which becomes a categorical column with its observed
values allowed when it has few distinct values. Column names become snake_case so every
engine downstream accepts them. The label sets the task: two values become 0/1 (binary), several
values stay as they are (multiclass), numbers to predict stay numbers (regression).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.data.dataset import check_destination, staged_dataset, write_dataset
from kiln.data.schema import ColumnSpec, DatasetSchema, TableSpec
from kiln.data.task import Task, infer_task
from kiln.errors import DatasetError, InputError

if TYPE_CHECKING:
    import pandas as pd

NULL_TOKENS = {"", "na", "n/a", "nan", "null", "none", "?"}
POSITIVE_TOKENS = {"1", "yes", "y", "true", "t", "churn", "churned"}
NEGATIVE_TOKENS = {"0", "no", "n", "false", "f", "stay", "stayed", "retained"}
PROTECTED_NAMES = {"gender", "sex", "senior_citizen", "age", "race", "ethnicity"}
MAX_CATEGORIES = 50


@dataclass(frozen=True)
class ImportOptions:
    csv: Path
    entity: str
    label: str
    timestamp: str | None = None
    as_of: date | None = None
    positive: str | None = None
    protected: tuple[str, ...] = field(default_factory=tuple)
    name: str | None = None
    task: str | None = None  # binary, multiclass or regression; read from the label when not given
    favourable: str | None = None  # the favourable outcome for bias metrics: classes "A,B", or ">X" / "<X"
    drop_duplicates: bool = False  # keep one of each exact duplicate row instead of refusing them


@dataclass(frozen=True)
class ImportedDataset:
    """A dataset as import_dataset wrote it: where, its content hash, and how the CSV's columns were read."""

    path: Path
    content_hash: str
    entity: str
    label: str
    task: str  # binary, multiclass or regression
    classes: list[Any]  # a classification label's values, in class order
    favourable: str | None  # the favourable outcome bias metrics use, when given
    label_mapping: dict[str, int]  # binary: the CSV's label values -> 0 or 1
    protected: list[str]
    columns: dict[str, str]  # column -> its type, and its categories when it has them
    rows: int
    features: int
    positive_rate: float | None  # binary: the share of rows of the positive class
    duplicates_dropped: int = 0  # exact duplicate rows left out (--drop-duplicates)


def snake_case(name: str) -> str:
    """``customerID`` -> ``customer_id``, ``Monthly Charges`` -> ``monthly_charges``."""
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name.strip())
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", s)
    s = re.sub(r"[^0-9a-zA-Z]+", "_", s).strip("_").lower()
    if not s:
        s = "column"
    return "c_" + s if s[0].isdigit() else s


def import_csv(opts: ImportOptions) -> tuple[DatasetSchema, dict[str, "pd.DataFrame"], dict[str, Any], dict[str, Any]]:
    """Read and type the CSV; returns (schema, frames, source, stats). Raises InputError naming the problem."""
    import pandas as pd

    if opts.timestamp and opts.as_of:
        raise InputError("give either --timestamp COLUMN or --as-of DATE, not both")
    raw = _read_csv(opts.csv)
    names = _rename_map(list(raw.columns))
    for flag, col in (("--entity", opts.entity), ("--label", opts.label), ("--timestamp", opts.timestamp)):
        if col is not None and col not in raw.columns:
            raise InputError(f"{flag} '{col}': no such column in {opts.csv.name}; columns are: {', '.join(raw.columns)}")
    for col in opts.protected:
        if col not in raw.columns:
            raise InputError(f"--protected '{col}': no such column in {opts.csv.name}")
    if opts.entity == opts.label:
        raise InputError("--entity and --label name the same column")
    raw = raw.map(lambda v: None if v.strip().lower() in NULL_TOKENS else v.strip())

    entity = names[opts.entity]
    ts_col = "event_timestamp"
    frame = pd.DataFrame(index=raw.index)
    frame[entity], entity_spec = _entity_column(raw[opts.entity], opts.entity, entity)
    if opts.timestamp:
        frame[ts_col] = _timestamps(raw[opts.timestamp], opts.timestamp)
    else:
        as_of = opts.as_of or datetime.now(UTC).date()
        if as_of > datetime.now(UTC).date():
            raise InputError(f"--as-of {as_of} is in the future")
        frame[ts_col] = pd.Timestamp(as_of, tz="UTC")
    key = [entity] + ([ts_col] if opts.timestamp else [])
    dropped = _duplicates(raw, frame, key, opts)
    if dropped:
        raw, frame = raw.drop(index=dropped), frame.drop(index=dropped)

    label_name = names[opts.label]
    labels_values, mapping, task = _label(raw[opts.label], opts.label, opts.positive, opts.task)
    favourable = opts.favourable
    if favourable and mapping:  # a binary label's values became 0/1: name them by their codes
        favourable = ",".join(str(mapping.get(v.strip(), v.strip())) for v in favourable.split(","))
    task = task.with_favourable(favourable, "--favourable")
    protected = {names[c] for c in opts.protected} or {names[c] for c in raw.columns if names[c] in PROTECTED_NAMES}
    feature_specs = []
    for col in raw.columns:
        if col in (opts.entity, opts.label, opts.timestamp):
            continue
        values, spec = _infer(raw[col], names[col])
        if spec.name in protected:
            spec.role = "protected"
        frame[spec.name] = values
        feature_specs.append(spec)
    if not feature_specs:
        raise InputError(f"{opts.csv.name} has no feature columns besides the entity, label and timestamp")

    entities_spec = TableSpec(
        name="entities",
        key=key,
        timestamp=ts_col,
        columns=[entity_spec, ColumnSpec(name=ts_col, dtype="timestamp", role="timestamp"), *feature_specs],
    )
    labels = pd.DataFrame({entity: frame[entity], "label_timestamp": frame[ts_col], label_name: labels_values})
    labels_spec = TableSpec(
        name="labels",
        key=[entity, "label_timestamp"],
        timestamp="label_timestamp",
        references={entity: "entities"},
        columns=[
            entity_spec.model_copy(),
            ColumnSpec(name="label_timestamp", dtype="timestamp", role="timestamp"),
            _label_spec(label_name, labels_values, task),
        ],
    )
    schema = DatasetSchema(
        name=opts.name or snake_case(opts.csv.stem),
        entity=entity,
        label=label_name,
        task=task.kind,
        favourable=str(task.favourable) if task.favourable else None,
        tables=[entities_spec, labels_spec],
    )
    source = {
        "csv": str(opts.csv.resolve()),
        "csv_sha256": hashlib.sha256(opts.csv.read_bytes()).hexdigest(),
        "columns": {names[c]: c for c in raw.columns},
        "label_mapping": mapping,
        "duplicates_dropped": len(dropped),
        "timestamp": opts.timestamp,
        "as_of": None if opts.timestamp else str(frame[ts_col].iloc[0].date()),
    }
    stats = {"rows": len(frame), "features": len(feature_specs),
             "positive_rate": round(float(labels_values.mean()), 4) if task.kind == "binary" else None}
    return schema, {"entities": frame, "labels": labels}, source, stats


def import_dataset(opts: ImportOptions, out: Path, *, overwrite: bool = False) -> ImportedDataset:
    """Import the CSV into the dataset folder ``out``: written whole or, on any failure, not at all."""
    check_destination(out, overwrite)  # before the CSV is read: a wrong --out fails at once
    schema, frames, source, stats = import_csv(opts)
    with staged_dataset(out, overwrite) as stage:
        manifest = write_dataset(stage, "imported", schema, frames, source, stats)
    columns = {c.name: c.dtype + (f" {c.categories}" if c.categories else "") for c in schema.table("entities").columns}
    label = schema.table("labels").column(schema.label)
    return ImportedDataset(path=out.resolve(), content_hash=manifest["content_hash"], entity=schema.entity,
                           label=schema.label, task=schema.task, classes=list(label.categories or []),
                           favourable=schema.favourable,
                           label_mapping=source["label_mapping"], protected=schema.protected(), columns=columns,
                           rows=stats["rows"], features=stats["features"], positive_rate=stats["positive_rate"],
                           duplicates_dropped=source["duplicates_dropped"])


def _read_csv(path: Path) -> "pd.DataFrame":
    import pandas as pd

    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DatasetError(f"{path}: not a readable CSV: {exc}") from exc
    if raw.empty:
        raise InputError(f"{path}: the CSV has a header but no rows")
    return raw


def _rename_map(columns: list[str]) -> dict[str, str]:
    names: dict[str, str] = {}
    seen: dict[str, str] = {}
    for col in columns:
        new = snake_case(col)
        if new in seen:
            raise InputError(f"columns '{seen[new]}' and '{col}' both become '{new}'; rename one in the CSV")
        seen[new] = col
        names[col] = new
    return names


def _entity_column(values: "pd.Series", original: str, name: str) -> tuple["pd.Series", ColumnSpec]:
    import pandas as pd

    nulls = values.isna()
    if nulls.any():
        rows = (values.index[nulls][:5] + 2).tolist()
        raise InputError(f"--entity '{original}' is empty on {int(nulls.sum())} rows (CSV lines {rows})")
    as_int = pd.to_numeric(values, errors="coerce")
    # Ids like "007" stay text: as numbers they would lose their zeros and could collide with "7".
    canonical = as_int.notna().all() and (as_int % 1 == 0).all() and (as_int.astype("int64").astype(str) == values).all()
    if canonical:
        return as_int.astype("int64"), ColumnSpec(name=name, dtype="int64", role="key")
    return values.astype(object), ColumnSpec(name=name, dtype="string", role="key")


def _timestamps(values: "pd.Series", original: str) -> "pd.Series":
    import pandas as pd

    parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    bad = parsed.isna()
    if bad.any():
        rows = (values.index[bad][:5] + 2).tolist()
        raise InputError(f"--timestamp '{original}': {int(bad.sum())} values are empty or not dates "
                         f"(CSV lines {rows}, e.g. {values[bad].iloc[0]!r})")
    future = parsed > pd.Timestamp.now(tz="UTC")
    if future.any():
        rows = (values.index[future][:5] + 2).tolist()
        raise InputError(f"--timestamp '{original}': {int(future.sum())} values lie in the future (CSV lines {rows})")
    return parsed


def _duplicates(raw: "pd.DataFrame", frame: "pd.DataFrame", key: list[str], opts: ImportOptions) -> list[Any]:
    """Rows to leave out: exact repeats of an earlier row, with --drop-duplicates. Rows that share a key but differ
    anywhere else are refused, named by their CSV lines, and so are exact repeats without the option."""
    repeated = frame.duplicated(key, keep=False)
    if not repeated.any():
        return []
    keys = frame[key].astype(str).agg("|".join, axis=1)
    variants = raw[repeated].assign(_key=keys[repeated]).drop_duplicates()
    clashing = set(variants["_key"][variants["_key"].duplicated()])  # keys held by rows that differ
    conflicting = repeated & keys.isin(clashing)
    exact = repeated & ~conflicting & raw.duplicated(keep="first")  # the same text in every column as an earlier row
    what = f"--entity '{opts.entity}'" + (" and --timestamp" if opts.timestamp else "")
    if conflicting.any():
        lines = (frame.index[conflicting][:10] + 2).tolist()  # +2: header line, 1-based lines
        also = f"; {int(exact.sum())} more rows are exact duplicates" if exact.any() else ""
        raise InputError(f"{what} is not unique: {int(conflicting.sum())} rows share a key but differ in other "
                         f"columns (CSV lines {lines}){also}",
                         hint="fix or remove the conflicting rows; pass --timestamp COLUMN if rows are snapshots at "
                              "different times")
    if not opts.drop_duplicates:
        lines = (frame.index[exact][:10] + 2).tolist()
        raise InputError(f"{what} is not unique: {int(exact.sum())} rows are exact duplicates of an earlier row "
                         f"(CSV lines {lines}); no rows conflict", hint="pass --drop-duplicates to keep one of each")
    return list(frame.index[exact])


def _label(values: "pd.Series", original: str, positive: str | None,
           requested: str | None) -> tuple["pd.Series", dict[str, int], Task]:
    import pandas as pd

    nulls = values.isna()
    if nulls.any():
        rows = (values.index[nulls][:5] + 2).tolist()
        raise InputError(f"--label '{original}' is empty on {int(nulls.sum())} rows (CSV lines {rows})")
    numbers = pd.to_numeric(values, errors="coerce")
    typed = numbers if numbers.notna().all() else values
    if typed is numbers and (numbers % 1 == 0).all() and not values.str.contains(r"[.eE]", regex=True).any():
        typed = numbers.astype("int64")
    task = infer_task(typed, f"--label '{original}'", requested)
    if task.kind == "regression":
        return typed.astype("float64"), {}, task
    if task.kind == "multiclass":
        return typed, {}, task
    distinct = sorted(values.unique())
    if positive is not None:
        if positive not in distinct:
            raise InputError(f"--positive '{positive}' is not a value of '{original}' ({distinct})")
        pos = positive
    else:
        hits = [v for v in distinct if v.lower() in POSITIVE_TOKENS]
        misses = [v for v in distinct if v.lower() in NEGATIVE_TOKENS]
        if len(hits) != 1 or len(misses) != 1:
            raise InputError(f"--label '{original}' has values {distinct}; cannot tell which is the positive class",
                             hint="pass --positive VALUE")
        pos = hits[0]
    mapping = {v: int(v == pos) for v in distinct}
    return values.map(mapping).astype("int64"), mapping, Task("binary", (0, 1))


def _label_spec(name: str, values: "pd.Series", task: Task) -> ColumnSpec:
    if task.kind == "regression":
        return ColumnSpec(name=name, dtype="float64", role="label")
    dtype = "int64" if values.dtype.kind in "iu" else "string"
    return ColumnSpec(name=name, dtype=dtype, role="label", categories=list(task.classes))


def _infer(values: "pd.Series", name: str) -> tuple["pd.Series", ColumnSpec]:
    import pandas as pd

    present = values.dropna()
    numbers = pd.to_numeric(present, errors="coerce")
    if len(present) and numbers.notna().all():
        integral = (numbers % 1 == 0).all() and not present.str.contains(r"[.eE]", regex=True).any()
        lo = 0.0 if (numbers >= 0).all() else None
        if integral:
            series = pd.to_numeric(values, errors="coerce").astype("Int64")
            observed = set(numbers.astype(int).unique())
            flags = sorted(int(v) for v in observed) if observed <= {0, 1} else None
            return series, ColumnSpec(name=name, dtype="int64", nullable=True, min=lo, categories=flags)
        series = pd.to_numeric(values, errors="coerce").astype("float64")
        return series, ColumnSpec(name=name, dtype="float64", nullable=True, min=lo)
    distinct = sorted(present.unique())
    cats = distinct if len(distinct) <= MAX_CATEGORIES else None
    return values.astype(object), ColumnSpec(name=name, dtype="string", nullable=True, categories=cats)
