"""Schema evolution: values for a feature newly added to a view, written into its history and online.

The SageMaker flow is UpdateFeatureGroup (add the feature) then PutRecord (write values). Here:
add a Field to the view in the repo's definitions file, `kiln features apply`, then
`kiln features backfill VIEW --data FILE` with the entity id (and optionally event_timestamp)
and the new feature's values. Every stored row keeps its other values; rows of entities the
file does not name get nulls for the new feature.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.data.dataset import open_dataset
from kiln.errors import DatasetError, InputError
from kiln.features.definitions import FeaturePlan
from kiln.features.ingest import partition_of, write_both_stores
from kiln.features.offline import offline_store, read_partitions
from kiln.features.repo import open_store, plan_dataset, registered_datasets
from kiln.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

PANDAS_TYPES = {"Int64": "Int64", "Float64": "float64", "String": "object"}


@dataclass
class BackfillReport:
    view: str
    features: list[str]
    entities: int
    rows_updated: int
    rows_total: int
    online_rows: dict[str, int]


def _plan_for_view(ws: Workspace, view: str) -> tuple[FeaturePlan, str]:
    known = []
    for entry in registered_datasets(ws).values():
        plan = plan_dataset(ws, open_dataset(Path(entry["path"])))
        for table, name in (("profile", plan.profile_view), ("activity", plan.activity_view)):
            if name == view:
                return plan, table
            if name:
                known.append(name)
    raise InputError(f"unknown feature view '{view}'", hint=f"known views: {', '.join(known) or 'none yet'}")


def _read(path: Path) -> "pd.DataFrame":
    import pandas as pd

    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    try:
        return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # any reader failure means an unreadable file
        raise DatasetError(f"{path}: not a readable CSV or parquet file: {exc}") from exc


def backfill(ws: Workspace, view: str, data_path: Path) -> BackfillReport:
    """Write the values in ``data_path`` into every stored row of ``view`` (matched by id, and time if given)."""
    import pandas as pd

    plan, table = _plan_for_view(ws, view)
    key = plan.join_key
    fields = {f.name: f.dtype for f in open_store(ws).get_feature_view(view).features}
    data = _read(data_path)
    if key not in data.columns:
        raise InputError(f"{data_path}: needs the id column '{key}'")
    match = [key, "event_timestamp"] if "event_timestamp" in data.columns else [key]
    values = [c for c in data.columns if c not in match]
    if not values:
        raise InputError(f"{data_path}: no feature columns besides {', '.join(match)}")
    for col in values:
        if col not in fields:
            raise InputError(f"{data_path}: column '{col}' is not a feature of view '{view}'",
                             hint=f"add Field(name='{col}', dtype=...) to {view} in the repo's definitions file, "
                                  "then run `kiln features apply`")
    if data[key].isna().any():
        raise InputError(f"{data_path}: column '{key}' has empty ids")
    if "event_timestamp" in data.columns:
        data["event_timestamp"] = pd.to_datetime(data["event_timestamp"], utc=True, errors="coerce")
        if data["event_timestamp"].isna().any():
            raise InputError(f"{data_path}: column 'event_timestamp' has empty or unparsable times")
    if data.duplicated(match).any():
        raise InputError(f"{data_path}: ({', '.join(match)}) repeats; give one value per row")
    for col in values:
        try:
            data[col] = data[col].astype(PANDAS_TYPES.get(str(fields[col]), "object"))
        except (TypeError, ValueError) as exc:
            raise InputError(f"{data_path}: column '{col}' does not fit the feature's type {fields[col]}: {exc}") \
                from None

    root = offline_store(ws)
    stored = read_partitions(root, f"{plan.dataset}/{table}")
    if stored is None or stored.empty:
        raise InputError(f"view '{view}' has no stored rows yet", hint="ingest a dataset first")
    if plan.join_type == "Int64":
        data[key] = data[key].astype("int64")
    unknown = sorted(set(data[key]) - set(stored[key]))
    if unknown:
        raise InputError(f"{data_path}: unknown {key} in view '{view}': {', '.join(map(str, unknown[:10]))}")
    base = stored.drop(columns=[c for c in values if c in stored.columns])
    merged = base.merge(data[match + values], on=match, how="left", indicator=True)
    if "event_timestamp" in match:
        missing = data.merge(base[match], on=match, how="left", indicator=True)
        if (missing["_merge"] == "left_only").any():
            first = missing[missing["_merge"] == "left_only"].iloc[0]
            raise InputError(f"{data_path}: no stored row of view '{view}' at {key}={first[key]}, "
                             f"event_timestamp={first['event_timestamp']}")
    updated = int((merged.pop("_merge") == "both").sum())
    if "event_timestamp" not in match:
        # Earlier rows of an entity keep their earlier values where they had them.
        for col in values:
            if col in stored.columns:
                merged[col] = merged[col].fillna(stored[col].reindex(merged.index))
    # Every partition is written again, so all of them carry the new columns.
    _, _, online = write_both_stores(ws, plan, root, {table: (merged, partition_of(table, merged))})
    return BackfillReport(view=view, features=values, entities=int(data[key].nunique()), rows_updated=updated,
                          rows_total=len(merged), online_rows=online)
