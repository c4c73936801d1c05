"""Batch transform: score a whole file with a registered model, in mini-batches, resumable after interruption.

The output is a folder of parts (one per mini-batch, each written whole by a rename) and a manifest; a rerun
with the same input and model skips the parts already there.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.errors import InputError
from kiln.training.scoring import conform

if TYPE_CHECKING:
    import pandas as pd

MANIFEST = "_manifest.json"
ROW_COLUMN = "row"


@dataclass
class BatchResult:
    output: str
    rows: int
    parts: int
    skipped_parts: int
    id_column: str
    model: str


def _read(path: Path) -> "pd.DataFrame":
    import pandas as pd

    if not path.is_file():
        raise InputError(f"--input {path}: no such file")
    try:
        return pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure means an unreadable input
        raise InputError(f"--input {path}: unreadable ({type(exc).__name__}: {exc})") from None


def _fingerprint(path: Path, model: str, batch_size: int, id_column: str) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    digest.update(f"|{model}|{batch_size}|{id_column}".encode())
    return digest.hexdigest()


def batch_transform(model_uri: str, input_path: Path, output: Path, batch_size: int = 1000,
                    id_column: str | None = None, on_batch: Callable[[int, int], None] = lambda done, total: None
                    ) -> BatchResult:
    """Score every row of ``input_path``; each output row keeps its id (``id_column``, or its row number)."""
    import mlflow.pyfunc
    import pandas as pd

    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: at least 1")
    frame = _read(input_path)
    if id_column is not None and id_column not in frame.columns:
        raise InputError(f"--id-column {id_column}: not a column of {input_path.name} "
                         f"(columns: {', '.join(map(str, frame.columns[:20]))})")
    model = mlflow.pyfunc.load_model(model_uri)
    schema = model.metadata.get_input_schema()
    try:
        conform(frame.head(1), schema)
    except KeyError as exc:
        raise InputError(f"--input {input_path.name}: missing feature columns the model needs: {exc.args[0]}") from None
    key = id_column or ROW_COLUMN
    fingerprint = _fingerprint(input_path, model_uri, batch_size, key)
    output.mkdir(parents=True, exist_ok=True)
    manifest_path = output / MANIFEST
    if manifest_path.exists():
        previous = json.loads(manifest_path.read_text())
        if previous.get("fingerprint") != fingerprint:
            raise InputError(f"--output {output} holds another job's results (other input, model or batch size)",
                             hint="choose an empty folder, or delete that one")
    total = (len(frame) + batch_size - 1) // batch_size
    manifest: dict[str, Any] = {"fingerprint": fingerprint, "model": model_uri, "input": str(input_path.resolve()),
                                "rows": len(frame), "batch_size": batch_size, "parts": total, "id_column": key,
                                "complete": False}
    manifest_path.write_text(json.dumps(manifest, indent=2))
    skipped = 0
    for i in range(total):
        part = output / f"part-{i:05d}.parquet"
        if part.exists():
            skipped += 1
            on_batch(i + 1, total)
            continue
        chunk = frame.iloc[i * batch_size:(i + 1) * batch_size]
        scored = model.predict(conform(chunk, schema))
        ids = chunk[id_column].to_numpy() if id_column else chunk.index.to_numpy()
        result = pd.DataFrame({key: ids, "probability": scored["probability"].to_numpy(),
                               "prediction": scored["prediction"].to_numpy()})
        tmp = part.with_name(f".{part.name}.tmp")
        result.to_parquet(tmp, index=False)
        tmp.replace(part)  # a part exists whole or not at all
        on_batch(i + 1, total)
    manifest["complete"] = True
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return BatchResult(output=str(output), rows=len(frame), parts=total, skipped_parts=skipped, id_column=key,
                       model=model_uri)


def read_output(output: Path) -> "pd.DataFrame":
    """Every part of a finished (or partial) batch transform, in input order."""
    import pandas as pd

    parts = sorted(output.glob("part-*.parquet"))
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True) if parts else pd.DataFrame()
