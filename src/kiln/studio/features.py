"""The Features page: feature views and services from Feast's registry, how fresh each view's data is, and the
datasets ingested into the feature store.

Feast's registry is read through Feast's own API, a FeatureStore over the workspace's repo as it is on disk (Kiln's
open_store would first write the repo's feature_store.yaml again); Feast is imported only when the workspace has a
registry to read (seconds, once per process). Feast records a view's materializations (the latest
interval is shown); Kiln's ingestion writes the online store directly, which Feast does not record, and Kiln keeps no
log of ingestions: what stands for one is each registered dataset (its manifest: when it was made, its content hash)
and the offline store's tables (their newest partition and when it was written).

Bounded: one registry read; per dataset one listing of its tables' partitions and one stat per table; no query of the
online store (its tables are as large as the entities times the features).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kiln.data.dataset import open_dataset
from kiln.errors import KilnError
from kiln.features.offline import PARTITION, offline_store
from kiln.features.repo import registered_datasets, repo_path
from kiln.storage import FolderStore, S3Store
from kiln.workspace import Workspace

DUMMY = "__dummy"  # the entity Feast gives a view that has none (feast.feature_view.DUMMY_ENTITY_NAME)


@dataclass(frozen=True)
class FeatureColumn:
    name: str
    dtype: str


@dataclass(frozen=True)
class FeatureViewRow:
    """A feature view (or an on-demand one, computed at read time from other views) and its freshness."""

    name: str
    kind: str  # batch | stream | on demand
    entities: tuple[str, ...]
    features: tuple[FeatureColumn, ...]
    ttl: timedelta | None  # how long a value stays valid; None: no limit
    source: str  # the batch source's path (or name); for an on-demand view, the views and requests it reads
    online: bool
    description: str
    materialized: tuple[datetime, datetime] | None  # the latest interval Feast materialized; None: never
    updated: datetime | None  # when the registry last changed the view (`kiln features apply`)


@dataclass(frozen=True)
class FeatureServiceRow:
    name: str
    views: tuple[str, ...]
    features: int
    description: str


@dataclass(frozen=True)
class OfflineTable:
    """A table of the offline store: its date partitions, the newest, and when that one was written."""

    name: str
    partitions: int
    newest_partition: str | None  # the date value, 2026-10-01
    written: datetime | None  # when the newest partition's file was written; None on S3 (not listed with times)


@dataclass(frozen=True)
class IngestedDataset:
    """A dataset ingested into the feature store (registered by `kiln features ingest`) and its offline tables."""

    name: str
    kind: str  # churn | imported
    path: str
    created: datetime | None  # when the dataset was made; None when its folder no longer reads
    content_hash: str | None
    tables: tuple[OfflineTable, ...]

    @property
    def last_written(self) -> datetime | None:
        times = [t.written for t in self.tables if t.written is not None]
        return max(times) if times else None


@dataclass(frozen=True)
class FeaturesPage:
    """Feature views and services by name, and the ingested datasets."""

    project: str
    online_store: str  # sqlite | redis
    views: tuple[FeatureViewRow, ...]
    services: tuple[FeatureServiceRow, ...]
    datasets: tuple[IngestedDataset, ...]
    registry_error: str | None  # why the registry did not read; the views and services are then empty
    unreadable: int  # records that could not be read: the registry, the datasets' list, a dataset's tables


def features_page(ws: Workspace) -> FeaturesPage:
    """The Features page of ``ws``; empty for a workspace without a feature repo.

    Bounded: one read of Feast's registry (Feast imported only when there is one), one listing of each dataset's
    offline tables and one stat per table; the online store is not queried.
    """
    views: tuple[FeatureViewRow, ...] = ()
    services: tuple[FeatureServiceRow, ...] = ()
    error: str | None = None
    unreadable = 0
    if _has_registry(ws):
        try:
            views, services = _registry(ws)
        except Exception as exc:  # noqa: BLE001 - Feast raises many types for a store it cannot read; the page stays
            error, unreadable = f"{type(exc).__name__}: {exc}", 1
    datasets, bad = _datasets(ws)
    return FeaturesPage(ws.settings.features.project, ws.settings.features.online_store.type, views, services,
                        datasets, error, unreadable + bad)


def _has_registry(ws: Workspace) -> bool:
    """Whether there is a registry to ask: a repo, and a registry file (a SQL registry is always asked)."""
    if not (repo_path(ws) / "feature_store.yaml").is_file():
        return False
    registry = ws.settings.features.registry
    return registry.type != "file" or Path(registry.path).is_file()


def _registry(ws: Workspace) -> tuple[tuple[FeatureViewRow, ...], tuple[FeatureServiceRow, ...]]:
    from feast import FeatureStore

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Feast's notices about its experimental parts
        store = FeatureStore(repo_path=str(repo_path(ws)))
        batch, on_demand, service_list = (store.list_feature_views(), store.list_on_demand_feature_views(),
                                          store.list_feature_services())
    views = [_view(v, "stream" if getattr(v, "stream_source", None) else "batch") for v in batch]
    views += [_on_demand(v) for v in on_demand]
    services = [FeatureServiceRow(s.name, tuple(p.name_alias or p.name for p in s.feature_view_projections),
                                  sum(len(p.features) for p in s.feature_view_projections), s.description or "")
                for s in service_list]
    return tuple(sorted(views, key=lambda v: v.name)), tuple(sorted(services, key=lambda s: s.name))


def _view(view: Any, kind: str) -> FeatureViewRow:
    intervals = list(view.materialization_intervals or [])
    latest = max(intervals, key=lambda pair: pair[1]) if intervals else None
    source = view.batch_source
    return FeatureViewRow(
        name=view.name, kind=kind, entities=tuple(view.entities), features=_columns(view.features),
        ttl=view.ttl if view.ttl else None,
        source=str(getattr(source, "path", None) or getattr(source, "name", "") or "") if source else "",
        online=bool(view.online), description=view.description or "",
        materialized=(_utc(latest[0]), _utc(latest[1])) if latest else None,
        updated=_utc(view.last_updated_timestamp) if view.last_updated_timestamp else None)


def _on_demand(view: Any) -> FeatureViewRow:
    sources = [*view.source_feature_view_projections, *view.source_request_sources]
    return FeatureViewRow(
        name=view.name, kind="on demand", entities=tuple(e for e in getattr(view, "entities", None) or () if e != DUMMY),
        features=_columns(view.features), ttl=None, source=", ".join(sources), online=bool(getattr(view, "online", True)),
        description=view.description or "", materialized=None,
        updated=_utc(view.last_updated_timestamp) if view.last_updated_timestamp else None)


def _columns(fields: Any) -> tuple[FeatureColumn, ...]:
    return tuple(FeatureColumn(f.name, str(f.dtype)) for f in fields)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _datasets(ws: Workspace) -> tuple[tuple[IngestedDataset, ...], int]:
    """The registered datasets with their offline tables, and the count of records that did not read."""
    try:
        registered: Any = registered_datasets(ws)  # JSON as written; checked below like any file read back
    except (OSError, ValueError):
        return (), 1
    if not isinstance(registered, dict):
        return (), 1
    store = offline_store(ws)
    out, unreadable = [], 0
    for name, entry in sorted(registered.items()):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            unreadable += 1
            continue
        created: datetime | None = None
        content_hash: str | None = None
        try:
            manifest = open_dataset(Path(entry["path"])).manifest
            created = _utc(datetime.fromisoformat(str(manifest["created_at"])))
            content_hash = str(manifest["content_hash"])
        except (KilnError, KeyError, ValueError):
            pass  # the dataset's folder moved or changed since its ingestion: shown without what it said
        try:
            tables = _tables(store, name)
        except (OSError, KilnError):  # a store that does not list (S3 down): the dataset is shown without tables
            tables, unreadable = (), unreadable + 1
        out.append(IngestedDataset(name, str(entry.get("kind", "")), entry["path"], created, content_hash, tables))
    return tuple(out), unreadable


def _tables(store: FolderStore | S3Store, dataset: str) -> tuple[OfflineTable, ...]:
    """A dataset's tables in the offline store, from one listing (keys DATASET/TABLE/date=VALUE/FILE)."""
    partitions: dict[str, dict[str, str]] = {}  # table -> partition value -> a key of it
    for key in store.list_keys(f"{dataset}/"):
        parts = key.split("/")
        if len(parts) == 4 and parts[2].startswith(f"{PARTITION}="):
            partitions.setdefault(parts[1], {})[parts[2].removeprefix(f"{PARTITION}=")] = key
    out = []
    for table, found in sorted(partitions.items()):
        newest = max(found)
        written = None
        if isinstance(store, FolderStore):
            written = datetime.fromtimestamp((store.root / found[newest]).stat().st_mtime, UTC)
        out.append(OfflineTable(table, len(found), newest, written))
    return tuple(out)
