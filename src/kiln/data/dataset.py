"""Kiln's dataset layout: a folder of parquet tables described by ``dataset.json``.

A dataset folder holds ``entities.parquet`` (one row per entity, or per entity and time),
optionally ``events.parquet`` (time-stamped activity) and ``labels.parquet`` (the target at a
prediction time), and ``dataset.json`` (the schema, where the data came from, and a content
hash). Datasets are written whole into a temporary sibling folder and renamed into place, so
a failed write leaves nothing behind and never a half-written dataset.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.data.schema import BUILTIN_SCHEMAS, DatasetSchema
from kiln.errors import DatasetError
from kiln.files import staged_folder

if TYPE_CHECKING:
    import pandas as pd

MANIFEST = "dataset.json"
FORMAT = "kiln-dataset/1"


@dataclass(frozen=True)
class Dataset:
    """A dataset folder and its manifest."""

    path: Path
    manifest: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def schema(self) -> DatasetSchema:
        """The schema the data must follow; built-in datasets use Kiln's copy, not the file's."""
        if self.kind in BUILTIN_SCHEMAS:
            return BUILTIN_SCHEMAS[self.kind]
        return DatasetSchema.model_validate(self.manifest["schema"])

    def table_path(self, table: str) -> Path:
        return self.path / f"{table}.parquet"

    def read(self, table: str) -> "pd.DataFrame":
        import pandas as pd

        return pd.read_parquet(self.table_path(table))


def open_dataset(path: Path) -> Dataset:
    """Open the dataset at ``path``; a DatasetError says what is missing or unreadable."""
    path = path.expanduser()
    if not path.exists():
        raise DatasetError(f"{path}: no such dataset folder", hint="create one with `kiln data generate` or `kiln data import`")
    if not path.is_dir():
        raise DatasetError(f"{path}: a dataset is a folder with {MANIFEST}, not a file")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise DatasetError(f"{path}: no {MANIFEST} here, so this is not a Kiln dataset",
                           hint="create one with `kiln data generate` or `kiln data import`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{manifest_path}: unreadable manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DatasetError(f"{manifest_path}: not a {FORMAT} manifest (field 'format')")
    for field in ("kind", "schema", "tables"):
        if field not in manifest:
            raise DatasetError(f"{manifest_path}: manifest has no '{field}' field")
    dataset = Dataset(path, manifest)
    try:
        _ = dataset.schema  # parsed here so a bad schema is reported as the manifest's
    except ValueError as exc:
        raise DatasetError(f"{manifest_path}: field 'schema' is not a valid dataset schema: {exc}") from exc
    return dataset


def content_hash(folder: Path, tables: list[str]) -> str:
    """sha256 over the tables' bytes, in name order: the dataset's identity for lineage."""
    digest = hashlib.sha256()
    for name in sorted(tables):
        digest.update(name.encode() + b"\0")
        with open(folder / f"{name}.parquet", "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def check_destination(out: Path, overwrite: bool) -> None:
    """Fail before any work if ``out`` holds something we must not replace."""
    if not out.exists():
        if not out.parent.exists():
            raise DatasetError(f"{out.parent}: folder does not exist", hint="create it first or choose another --out")
        return
    if not out.is_dir():
        raise DatasetError(f"{out}: exists and is a file", hint="choose another --out")
    if (out / MANIFEST).exists():
        if not overwrite:
            raise DatasetError(f"{out}: a dataset is already there", hint="pass --overwrite to replace it, or choose another --out")
        return
    if any(out.iterdir()):
        raise DatasetError(f"{out}: folder is not empty and holds no dataset; refusing to write into it",
                           hint="choose an empty or new folder for --out")


def staged_dataset(out: Path, overwrite: bool) -> AbstractContextManager[Path]:
    """A temporary folder beside ``out`` to write into; renamed over ``out`` only on success."""
    check_destination(out, overwrite)
    # What check_destination lets through (a dataset, with overwrite; an empty folder) is replaced.
    return staged_folder(out, overwrite=True)


def write_dataset(
    stage: Path,
    kind: str,
    schema: DatasetSchema,
    frames: dict[str, "pd.DataFrame"],
    source: dict[str, Any],
    stats: dict[str, Any],
) -> dict[str, Any]:
    """Write the tables and the manifest into ``stage``; returns the manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables: dict[str, Any] = {}
    for name, frame in frames.items():
        spec = schema.table(name)
        arrow = pa.Table.from_pandas(frame[[c.name for c in spec.columns]], schema=arrow_schema(spec), preserve_index=False)
        pq.write_table(arrow, stage / f"{name}.parquet", compression="zstd")
        tables[name] = {"file": f"{name}.parquet", "rows": len(frame)}
    manifest = {
        "format": FORMAT,
        "kind": kind,
        "name": schema.name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "content_hash": content_hash(stage, list(frames)),
        "tables": tables,
        "source": source,
        "stats": stats,
        "schema": schema.model_dump(mode="json"),
    }
    (stage / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def arrow_schema(spec: Any) -> Any:
    import pyarrow as pa

    def arrow_type(dtype: str) -> Any:
        return {
            "int64": pa.int64(),
            "float64": pa.float64(),
            "string": pa.string(),
            "timestamp": pa.timestamp("us", tz="UTC"),
        }[dtype]

    return pa.schema([pa.field(c.name, arrow_type(c.dtype), nullable=c.nullable) for c in spec.columns])
