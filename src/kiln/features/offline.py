"""The offline store's files: parquet tables partitioned by date, changed a whole partition at a time.

The store is a folder or an S3 prefix (``features.offline_store.path``). Each partition is one object,
``TABLE/date=VALUE/part-0.parquet``. A change is staged under a hidden prefix first; committing keeps a
copy of each live partition aside and replaces it with the staged one (a rename on disk, a server-side
copy on S3: readers see the old partition or the new one, never half of either), and rolling back puts
the copies back, so a failed ingestion leaves every partition exactly as it was.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kiln import storage
from kiln.errors import EnvironmentProblem, ServiceError
from kiln.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

PARTITION = "date"
PART = "part-0.parquet"


def offline_store(ws: Workspace) -> storage.FolderStore | storage.S3Store:
    offline = ws.settings.features.offline_store
    return storage.open_store(offline.path, offline.endpoint_url)


@dataclass
class PartitionChange:
    """Staged partitions of one table, and what committing them replaced."""

    table: str  # DATASET/TABLE
    staged: dict[str, str] = field(default_factory=dict)  # partition value -> staged key
    swapped: list[tuple[str, str | None]] = field(default_factory=list)  # (live key, copy of the old one kept aside)


class OfflineChange:
    """Every partition an ingestion rewrites, staged, then committed or rolled back together."""

    def __init__(self, store: storage.Store) -> None:
        self.store = store
        self.stage_prefix = f".staging-{uuid.uuid4().hex[:8]}/"
        self.tables: list[PartitionChange] = []

    def stage(self, table: str, frame: "pd.DataFrame", partition_of: "pd.Series") -> int:
        """Stage ``frame``'s rows grouped by ``partition_of`` (strings); returns the partition count."""
        change = PartitionChange(table)
        for value, rows in frame.groupby(partition_of.to_numpy(), sort=True):
            buffer = io.BytesIO()
            # Microsecond timestamps: DuckDB cannot compare nanosecond ones with a time zone.
            rows.reset_index(drop=True).to_parquet(buffer, index=False, coerce_timestamps="us",
                                                   allow_truncated_timestamps=True)
            key = f"{self.stage_prefix}{table}/{PARTITION}={value}/{PART}"
            self.store.put(key, buffer.getvalue())
            change.staged[str(value)] = key
        self.tables.append(change)
        return len(change.staged)

    def commit(self) -> None:
        try:
            for change in self.tables:
                for value, staged in change.staged.items():
                    live = f"{change.table}/{PARTITION}={value}/{PART}"
                    old = None
                    if self.store.exists(live):
                        old = f"{self.stage_prefix}.old/{uuid.uuid4().hex[:8]}"
                        self.store.copy(live, old)
                    change.swapped.append((live, old))
                    self.store.move(staged, live)
        except (OSError, ServiceError) as exc:
            self.rollback()
            raise EnvironmentProblem(f"could not write the offline store {self.store.location}: {exc}") from exc

    def rollback(self) -> None:
        for change in self.tables:
            for live, old in reversed(change.swapped):
                if old is None:
                    self.store.delete(live)
                else:
                    self.store.move(old, live)
            change.swapped.clear()
        self.discard()

    def discard(self) -> None:
        self.store.delete_prefix(self.stage_prefix)


def _partition_keys(store: storage.Store, table: str) -> dict[str, list[str]]:
    """Partition value -> its parquet objects, for one DATASET/TABLE."""
    found: dict[str, list[str]] = {}
    for key in store.list_keys(f"{table}/"):
        folder, _, name = key[len(table) + 1:].partition("/")
        if folder.startswith(f"{PARTITION}=") and name.endswith(".parquet") and "/" not in name:
            found.setdefault(folder.split("=", 1)[1], []).append(key)
    return found


def read_partitions(store: storage.Store, table: str, values: list[str] | None = None) -> "pd.DataFrame | None":
    """Rows of the given partitions (all if None) of DATASET/TABLE, without the partition column."""
    import pandas as pd

    parts = _partition_keys(store, table)
    wanted = sorted(parts) if values is None else [v for v in sorted(set(values)) if v in parts]
    frames = [pd.read_parquet(io.BytesIO(store.get(key))) for v in wanted for key in sorted(parts[v])]
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True)


def partition_values(store: storage.Store, table: str) -> list[str]:
    return sorted(_partition_keys(store, table))
