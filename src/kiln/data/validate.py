"""Checking a dataset against its schema: types, nulls, ranges, categories, keys, time.

Validation only reads. A failure lists every broken rule with its table, column and a few
offending rows, and raises ValidationFailed (exit code 1 in the CLI).
"""

from __future__ import annotations

import math
from collections.abc import Set
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.data.dataset import Dataset, content_hash, open_dataset
from kiln.data.schema import ColumnSpec, DatasetSchema, TableSpec
from kiln.errors import ValidationFailed

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

MAX_EXAMPLES = 5
PANDAS_INDEX_PREFIX = "__index_level_"  # a pandas index saved with the data: metadata, not a column


@dataclass
class Problem:
    """One broken rule: where, which rule, how many rows, and a few of them."""

    table: str
    column: str | None
    rule: str
    count: int
    examples: list[dict[str, Any]] = field(default_factory=list)

    def describe(self) -> str:
        where = f"{self.table}.parquet" + (f", column '{self.column}'" if self.column else "")
        text = f"{where}: {self.rule}"
        if self.count:
            text += f" ({self.count} row{'s' if self.count != 1 else ''})"
        if self.examples:
            text += "; e.g. " + "; ".join(
                f"row {e['row']}" + (f" [{e['key']}]" if e.get("key") else "") + f": {e['value']!r}"
                for e in self.examples
            )
        return text


@dataclass
class ValidationReport:
    """What a passing validation saw (a failing one raises ValidationFailed)."""

    valid: bool
    path: str
    kind: str
    tables: dict[str, int]
    content_hash: str
    content_hash_matches_manifest: bool


def validate_dataset(path: Path) -> ValidationReport:
    """Validate the dataset folder at ``path``; raises ValidationFailed listing every problem."""
    dataset = open_dataset(path)
    schema = dataset.schema
    problems: list[Problem] = []
    frames: dict[str, "pd.DataFrame"] = {}
    for spec in schema.tables:
        frame, table_problems = _load_and_check(dataset, spec)
        problems += table_problems
        if frame is not None:
            frames[spec.name] = frame
    problems += check_references(schema, frames)
    if problems:
        lines = "\n".join("  - " + p.describe() for p in problems)
        raise ValidationFailed(
            f"{path}: {len(problems)} rule{'s' if len(problems) != 1 else ''} broken:\n{lines}",
            [asdict(p) for p in problems],
            hint="fix the data at its source and generate or import it again",
        )
    digest = content_hash(dataset.path, [t.name for t in schema.tables])
    return ValidationReport(
        valid=True,
        path=str(dataset.path),
        kind=dataset.kind,
        tables={name: len(frame) for name, frame in frames.items()},
        content_hash=digest,
        content_hash_matches_manifest=digest == dataset.manifest.get("content_hash"),
    )


def _load_and_check(dataset: Dataset, spec: TableSpec) -> tuple["pd.DataFrame | None", list[Problem]]:
    import pandas as pd
    import pyarrow.parquet as pq

    file = dataset.table_path(spec.name)
    if not file.is_file():
        return None, [Problem(spec.name, None, "file is missing", 0)]
    try:
        arrow_schema = pq.read_schema(file)
        frame = pd.read_parquet(file).reset_index(drop=True)  # rows numbered by position in the file
    except Exception as exc:  # noqa: BLE001 - any reader failure means an unreadable file
        return None, [Problem(spec.name, None, f"not a readable parquet file: {exc}", 0)]
    problems = check_types(spec, arrow_schema)
    bad_type = {p.column for p in problems}
    problems += check_frame(spec, frame, skip=bad_type)
    return frame, problems


def check_types(spec: TableSpec, schema: "pa.Schema") -> list[Problem]:
    """Missing columns, unexpected columns, and columns of the wrong type."""
    problems = []
    present = set(schema.names)
    for col in spec.columns:
        if col.name not in present:
            problems.append(Problem(spec.name, col.name, "required column is missing", 0))
            continue
        found = schema.field(col.name).type
        ok, expected = _type_matches(col, found)
        if not ok:
            problems.append(Problem(spec.name, col.name, f"wrong type: expected {expected}, found {found}", 0))
    for name in schema.names:
        if name not in {c.name for c in spec.columns} and not name.startswith(PANDAS_INDEX_PREFIX):
            problems.append(Problem(spec.name, name, "unexpected column (not in the schema)", 0))
    return problems


def _type_matches(col: ColumnSpec, found: "pa.DataType") -> tuple[bool, str]:
    import pyarrow.types as t

    if col.dtype == "int64":
        return t.is_integer(found), "an integer"
    if col.dtype == "float64":
        return t.is_floating(found) or t.is_integer(found), "a number"
    if col.dtype == "string":
        return t.is_string(found) or t.is_large_string(found), "a string"
    return t.is_timestamp(found) and found.tz is not None, "a timestamp with a time zone (UTC)"


def check_frame(spec: TableSpec, frame: "pd.DataFrame", skip: Set[str | None] = frozenset()) -> list[Problem]:
    """Value rules on a loaded table: nulls, ranges, categories, future times, unique keys."""
    import pandas as pd
    import pandera.pandas as pa
    from pandera.errors import SchemaErrors

    if frame.empty and spec.name in ("entities", "labels"):
        return [Problem(spec.name, None, "table has no rows", 0)]
    now = pd.Timestamp.now(tz="UTC")
    columns = {}
    for col in spec.columns:
        if col.name in skip or col.name not in frame.columns:
            continue
        checks = []
        if col.min is not None or col.max is not None:
            lo = col.min if col.min is not None else float("-inf")
            hi = col.max if col.max is not None else float("inf")
            checks.append(pa.Check.in_range(lo, hi, error=f"outside the range [{_num(lo)}, {_num(hi)}]"))
        if col.categories is not None:
            checks.append(pa.Check.isin(col.categories, error=f"not one of the allowed categories {col.categories}"))
        if col.name == spec.timestamp:
            checks.append(pa.Check.le(now, error=f"timestamp in the future (after {now:%Y-%m-%d %H:%M:%S} UTC)"))
        nullable = col.nullable and col.name not in spec.key and col.name != spec.timestamp
        columns[col.name] = pa.Column(None, checks=checks, nullable=nullable)
    problems: list[Problem] = []
    try:
        pa.DataFrameSchema(columns).validate(frame, lazy=True)
    except SchemaErrors as exc:
        problems += _from_failure_cases(spec, frame, exc.failure_cases)
    problems += _duplicate_keys(spec, frame, skip)
    return problems


def _from_failure_cases(spec: TableSpec, frame: "pd.DataFrame", cases: "pd.DataFrame") -> list[Problem]:
    problems = []
    for (column, check), group in cases.groupby(["column", "check"], sort=False, dropna=False):
        rule = "null value where none is allowed" if check == "not_nullable" else str(check)
        rows = group["index"].dropna().astype(int).tolist()
        values = group["failure_case"].tolist()
        examples = [
            {"row": row, "key": _key_text(spec, frame, row), "value": _plain(value)}
            for row, value in list(zip(rows, values))[:MAX_EXAMPLES]
        ]
        problems.append(Problem(spec.name, str(column), rule, len(group), examples))
    return problems


def _duplicate_keys(spec: TableSpec, frame: "pd.DataFrame", skip: Set[str | None]) -> list[Problem]:
    # pandera reports each duplicate but not which key repeats; this groups them by key.
    if not spec.key or any(k in skip or k not in frame.columns for k in spec.key):
        return []
    dup = frame.duplicated(spec.key, keep=False)
    if not dup.any():
        return []
    rows = frame.index[dup].tolist()
    examples = [{"row": int(r), "key": None, "value": _key_text(spec, frame, r)} for r in rows[:MAX_EXAMPLES]]
    return [Problem(spec.name, ", ".join(spec.key), f"key ({', '.join(spec.key)}) is not unique", len(rows), examples)]


def check_references(schema: DatasetSchema, frames: dict[str, "pd.DataFrame"]) -> list[Problem]:
    """Every entity id in events and labels exists in the entities table."""
    problems = []
    for spec in schema.tables:
        frame = frames.get(spec.name)
        for column, target in spec.references.items():
            parent = frames.get(target)
            if frame is None or parent is None or column not in frame or schema.entity not in parent:
                continue
            missing = ~frame[column].isin(parent[schema.entity]) & frame[column].notna()
            if missing.any():
                rows = frame.index[missing].tolist()
                examples = [{"row": int(r), "key": None, "value": _plain(frame.at[r, column])} for r in rows[:MAX_EXAMPLES]]
                problems.append(Problem(spec.name, column, f"id not found in {target}.parquet", len(rows), examples))
    return problems


def _key_text(spec: TableSpec, frame: "pd.DataFrame", row: int) -> str | None:
    if row not in frame.index:
        return None
    return ", ".join(f"{k}={_plain(frame.at[row, k])}" for k in spec.key if k in frame.columns)


def _plain(value: Any) -> Any:
    """A JSON-friendly form of a cell value."""

    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
