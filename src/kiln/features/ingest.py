"""Ingestion as a processing job: validate, aggregate, append offline, push the newest values online.

All or nothing: the dataset is validated and every table computed in memory before anything
is written; the offline partitions are staged and swapped in together; the online store is
snapshotted first. A failure at any point puts both stores back as they were.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.connections import redis_client
from kiln.data.dataset import Dataset, open_dataset
from kiln.data.validate import validate_dataset
from kiln.errors import EnvironmentProblem, KilnError
from kiln.features.aggregates import HISTORY_DAYS, activity
from kiln.features.definitions import FeaturePlan
from kiln.features.offline import OfflineChange, offline_store, partition_values, read_partitions
from kiln.features.repo import add_dataset, apply_if_changed, open_store, plan_dataset
from kiln.progress import Progress, no_progress
from kiln.storage import Store
from kiln.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class IngestReport:
    dataset: str
    content_hash: str
    feature_service: str
    feature_views: list[str]
    offline_rows: dict[str, int] = field(default_factory=dict)
    offline_partitions: dict[str, int] = field(default_factory=dict)
    online_rows: dict[str, int] = field(default_factory=dict)
    definitions_created: bool = False
    seconds: float = 0.0


def ingest(ws: Workspace, path: Path, progress: Progress = no_progress) -> IngestReport:
    """Ingest the dataset at ``path`` into the workspace's feature store."""
    t0 = time.perf_counter()
    progress("validating the dataset")
    report = validate_dataset(path)
    dataset = open_dataset(path)
    plan = plan_dataset(ws, dataset)
    root = offline_store(ws)
    progress("computing profile rows and windowed aggregates")
    tables = _tables(dataset, plan, root)

    progress("registering the feature definitions")
    _, created = add_dataset(ws, dataset)
    apply_if_changed(ws)

    result = IngestReport(dataset=plan.dataset, content_hash=report.content_hash, feature_service=plan.service,
                          feature_views=plan.views, definitions_created=created)
    result.offline_rows, result.offline_partitions, result.online_rows = write_both_stores(
        ws, plan, root, tables, progress)
    result.seconds = round(time.perf_counter() - t0, 2)
    return result


Tables = dict[str, tuple["pd.DataFrame", "pd.Series"]]  # table -> (its rows, each row's partition)


def write_both_stores(ws: Workspace, plan: FeaturePlan, root: Store, tables: Tables,
                      progress: Progress = no_progress) -> tuple[dict[str, int], ...]:
    """Swap the staged partitions into the offline store and push the newest rows online, all or nothing.

    Returns (rows per table, partitions per table, entities pushed per view).
    """
    change = OfflineChange(root)
    touched = sorted(set().union(*(set(frame[plan.join_key]) for frame, _ in tables.values())))
    snapshot = _OnlineSnapshot(ws, plan, touched)
    rows, partitions, online = {}, {}, {}
    try:
        progress("staging the offline store")
        for name, (frame, partition_of) in tables.items():
            partitions[name] = change.stage(f"{plan.dataset}/{name}", frame, partition_of)
            rows[name] = len(frame)
        snapshot.take()
        change.commit()
        progress("pushing the newest values to the online store")
        store = open_store(ws)
        for view, frame in _newest(plan, tables, root).items():
            if len(frame):
                store.write_to_online_store(view, frame)
            online[view] = len(frame)
    except BaseException as exc:
        change.rollback()
        try:
            snapshot.restore()
        except Exception as undo:  # noqa: BLE001 - whatever the store says, the user must hear both failures
            raise EnvironmentProblem(
                f"writing the feature store failed ({type(exc).__name__}: {exc}) and putting the online store "
                f"back failed too ({type(undo).__name__}: {undo}); the offline store was rolled back",
                hint="rebuild the online store from the offline one with `kiln features materialize --start ...`",
            ) from exc
        if isinstance(exc, KilnError):
            raise
        if isinstance(exc, Exception):
            raise EnvironmentProblem(f"writing the feature store failed and was rolled back: "
                                     f"{type(exc).__name__}: {exc}") from exc
        raise
    change.discard()
    snapshot.discard()
    return rows, partitions, online


def partition_of(table: str, frame: "pd.DataFrame") -> "pd.Series":
    """Profiles by month; raw events by day; aggregates by the day they summarize (stamped the next midnight)."""
    import pandas as pd

    if table == "profile":
        return frame["event_timestamp"].dt.strftime("%Y-%m")
    if table == "activity":
        return (frame["event_timestamp"] - pd.Timedelta(days=1)).dt.strftime("%Y-%m-%d")
    return frame["event_timestamp"].dt.strftime("%Y-%m-%d")


def _tables(dataset: Dataset, plan: FeaturePlan, root: Store) -> Tables:
    """Each offline table's full new partitions, with the partition value of every row."""
    import pandas as pd

    key = plan.join_key
    entities = dataset.read("entities")
    ts_col = dataset.schema.table("entities").timestamp or "event_timestamp"
    profile = entities.rename(columns={ts_col: "event_timestamp"}) if ts_col != "event_timestamp" else entities
    profile = profile[[key, "event_timestamp", *[n for n, _ in plan.profile_features]]]
    profile = _merge_with_existing(root, f"{plan.dataset}/profile", profile, partition_of("profile", profile),
                                   [key, "event_timestamp"])
    out = {"profile": (profile, partition_of("profile", profile))}
    if plan.activity_view is None:
        return out

    events = dataset.read("events")
    if events.empty:
        return out
    day = events["event_timestamp"].dt.floor("D")
    new_days = pd.DatetimeIndex(day.unique()).sort_values()
    raw = _merge_with_existing(root, f"{plan.dataset}/events", events, partition_of("events", events),
                               [key, "event_timestamp"])
    # Windows of the days this data touches reach back HISTORY_DAYS; late data also changes the
    # HISTORY_DAYS days after it, so those are read and recomputed too.
    lo, hi = new_days.min() - pd.Timedelta(days=HISTORY_DAYS), new_days.max() + pd.Timedelta(days=HISTORY_DAYS)
    stored = set(partition_values(root, f"{plan.dataset}/events"))
    span = [d.strftime("%Y-%m-%d") for d in pd.date_range(lo, hi, freq="D")]
    history = read_partitions(root, f"{plan.dataset}/events", [d for d in span if d in stored])
    window = raw if history is None else pd.concat([history, raw], ignore_index=True)
    window = window.drop_duplicates([key, "event_timestamp"], keep="last")
    emit = pd.date_range(new_days.min(), hi, freq="D")
    acts = activity(window, entities, key, emit_days=emit)
    out["events"] = (raw, partition_of("events", raw))
    acts = _merge_with_existing(root, f"{plan.dataset}/activity", acts, partition_of("activity", acts), [key, "event_timestamp"])
    out["activity"] = (acts, partition_of("activity", acts))
    return out


def _merge_with_existing(root: Store, table: str, new: "pd.DataFrame", partition_of: "pd.Series",
                         key: list[str]) -> "pd.DataFrame":
    """The full contents of every partition ``new`` touches: stored rows, then new ones winning on key.

    A column the stored rows have and ``new`` lacks (one added by a backfill) is kept: new rows
    take the stored value of the same key, or null.
    """
    import pandas as pd

    touched = sorted(partition_of.unique())
    existing = read_partitions(root, table, touched)
    if existing is None:
        return new.reset_index(drop=True)
    extra = [c for c in existing.columns if c not in new.columns]
    if extra:
        new = new.merge(existing[key + extra].drop_duplicates(key, keep="last"), on=key, how="left")
    merged = pd.concat([existing, new], ignore_index=True)
    return merged.drop_duplicates(key, keep="last").reset_index(drop=True)


def _newest(plan: FeaturePlan, tables: dict[str, tuple["pd.DataFrame", "pd.Series"]], root: Store) -> dict[str, "pd.DataFrame"]:
    """Per view, each entity's newest row among the written ones, unless the store holds a newer one."""
    key = plan.join_key
    out = {}
    for table, view in (("profile", plan.profile_view), ("activity", plan.activity_view)):
        if view is None or table not in tables:
            continue
        frame = tables[table][0]
        latest = frame.sort_values("event_timestamp").drop_duplicates(key, keep="last")
        stored = read_partitions(root, f"{plan.dataset}/{table}")
        if stored is not None:
            newest_stored = stored.groupby(key)["event_timestamp"].max()
            keep = latest["event_timestamp"] >= latest[key].map(newest_stored).fillna(latest["event_timestamp"])
            latest = latest[keep]
        out[view] = latest.reset_index(drop=True)
    return out


class _OnlineSnapshot:
    """What the online store holds for the entities an ingestion touches, to put back if it fails.

    SQLite: a copy of the database file. Redis: each touched entity's hash (DUMP), restored with
    RESTORE, or deleted if it did not exist before.
    """

    def __init__(self, ws: Workspace, plan: FeaturePlan, ids: list[Any]) -> None:
        self.online = ws.settings.features.online_store
        self.project = ws.settings.features.project
        self.plan, self.ids = plan, ids
        self.copy: Path | None = None
        self.existed = False
        self.dumps: list[tuple[bytes, bytes | None]] = []

    def take(self) -> None:
        if self.online.type == "sqlite":
            path = Path(self.online.path)
            self.existed = path.exists()
            if self.existed:
                self.copy = path.with_name(f".{path.name}.snapshot")
                shutil.copy2(path, self.copy)
            return
        client = self._redis()
        keys = self._redis_keys()
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.dump(key)
        self.dumps = list(zip(keys, pipe.execute()))

    def restore(self) -> None:
        if self.online.type == "sqlite":
            path = Path(self.online.path)
            if self.copy is not None and self.copy.exists():
                self.copy.replace(path)
            elif not self.existed:
                path.unlink(missing_ok=True)
            return
        if not self.dumps:
            return
        client = self._redis()
        pipe = client.pipeline(transaction=False)
        for key, _ in self.dumps:
            pipe.dump(key)
        changed = [(key, before) for (key, before), now in zip(self.dumps, pipe.execute()) if now != before]
        if not changed:
            return
        pipe = client.pipeline(transaction=True)
        for key, dumped in changed:
            if dumped is None:
                pipe.delete(key)
            else:
                pipe.restore(key, 0, dumped, replace=True)
        pipe.execute()

    def discard(self) -> None:
        if self.copy is not None:
            self.copy.unlink(missing_ok=True)

    def _redis(self) -> Any:
        assert self.online.type == "redis"  # callers take the SQLite path first
        return redis_client(self.online.connection_string)

    def _redis_keys(self) -> list[bytes]:
        # The key Feast's Redis store files an entity under: serialized entity key + project name.
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        def value(v: Any) -> Value:
            return Value(int64_val=int(v)) if self.plan.join_type == "Int64" else Value(string_val=str(v))

        return [serialize_entity_key(EntityKey(join_keys=[self.plan.join_key], entity_values=[value(v)]),
                                     entity_key_serialization_version=3) + self.project.encode()
                for v in self.ids]
