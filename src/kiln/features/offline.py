"""The offline store's files: parquet tables partitioned by date, changed a whole partition at a time.

A change is staged into a hidden folder first; committing swaps each partition folder into
place (the old one kept aside until the end), and rolling back swaps them back, so a failed
ingestion leaves every partition exactly as it was.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.errors import EnvironmentProblem

if TYPE_CHECKING:
    import pandas as pd

PARTITION = "date"


@dataclass
class PartitionChange:
    """Staged partitions of one table, and what committing them moved."""

    table_dir: Path
    staged: dict[str, Path] = field(default_factory=dict)  # partition value -> staged folder
    swapped: list[tuple[Path, Path | None]] = field(default_factory=list)  # (live folder, old folder kept aside)


class OfflineChange:
    """Every partition an ingestion rewrites, staged, then committed or rolled back together."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stage_dir = root / f".staging-{uuid.uuid4().hex[:8]}"
        self.tables: list[PartitionChange] = []

    def stage(self, table_dir: Path, frame: "pd.DataFrame", partition_of: "pd.Series") -> int:
        """Stage ``frame``'s rows grouped by ``partition_of`` (strings); returns the partition count."""
        change = PartitionChange(table_dir)
        for value, rows in frame.groupby(partition_of.to_numpy(), sort=True):
            target = self.stage_dir / table_dir.relative_to(self.root) / f"{PARTITION}={value}"
            target.mkdir(parents=True)
            # Microsecond timestamps: DuckDB cannot compare nanosecond ones with a time zone.
            rows.reset_index(drop=True).to_parquet(target / "part-0.parquet", index=False, coerce_timestamps="us",
                                                   allow_truncated_timestamps=True)
            change.staged[str(value)] = target
        self.tables.append(change)
        return len(change.staged)

    def commit(self) -> None:
        trash = self.stage_dir / ".old"
        trash.mkdir(parents=True, exist_ok=True)
        try:
            for change in self.tables:
                change.table_dir.mkdir(parents=True, exist_ok=True)
                for value, staged in change.staged.items():
                    live = change.table_dir / f"{PARTITION}={value}"
                    old = None
                    if live.exists():
                        old = trash / f"{uuid.uuid4().hex[:8]}"
                        live.rename(old)
                    change.swapped.append((live, old))
                    staged.rename(live)
        except OSError as exc:
            self.rollback()
            raise EnvironmentProblem(f"could not write the offline store under {self.root}: {exc}") from exc

    def rollback(self) -> None:
        for change in self.tables:
            for live, old in reversed(change.swapped):
                if live.exists():
                    shutil.rmtree(live)
                if old is not None:
                    old.rename(live)
            change.swapped.clear()
        self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.stage_dir, ignore_errors=True)


def read_partitions(table_dir: Path, values: list[str] | None = None) -> "pd.DataFrame | None":
    """Rows of the given partitions (all if None) of a table, without the partition column."""
    import pandas as pd

    if not table_dir.exists():
        return None
    folders = sorted(p for p in table_dir.glob(f"{PARTITION}=*") if p.is_dir())
    if values is not None:
        wanted = {f"{PARTITION}={v}" for v in values}
        folders = [p for p in folders if p.name in wanted]
    frames = [pd.read_parquet(f) for p in folders for f in sorted(p.glob("*.parquet"))]
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True)


def partition_values(table_dir: Path) -> list[str]:
    if not table_dir.exists():
        return []
    return sorted(p.name.split("=", 1)[1] for p in table_dir.glob(f"{PARTITION}=*") if p.is_dir())
