"""Batch transform: score a whole file with a registered model, in mini-batches, resumable after interruption.

Input and output are a path or on S3 (s3://BUCKET/KEY for the input, s3://BUCKET/PREFIX for the output; kiln.storage).
The output is a set of parts (one per mini-batch, each written whole: a rename on disk, one PUT on S3) and a
manifest; a rerun with the same input and model skips the parts already there.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.errors import InputError, ServiceError
from kiln.storage import is_s3, open_store, read_object
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


def _read(location: str) -> tuple["pd.DataFrame", bytes]:
    import pandas as pd

    if not is_s3(location) and not Path(location).is_file():
        raise InputError(f"--input {location}: no such file")
    try:
        data = read_object(location)
    except InputError as exc:  # a malformed s3:// URI; its message names it
        raise InputError(f"--input {exc.message}", hint=exc.hint) from None
    except ServiceError as exc:  # the store refused the read
        raise InputError(f"--input {location}: {exc.message}", hint=exc.hint) from None
    try:
        frame = pd.read_csv(io.BytesIO(data)) if location.lower().endswith(".csv") else pd.read_parquet(
            io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - any reader failure means an unreadable input
        raise InputError(f"--input {location}: unreadable ({type(exc).__name__}: {exc})") from None
    return frame, data


def _fingerprint(data: bytes, model: str, batch_size: int, id_column: str) -> str:
    digest = hashlib.sha256(data)
    digest.update(f"|{model}|{batch_size}|{id_column}".encode())
    return digest.hexdigest()


def batch_transform(model_uri: str, input_path: Path | str, output: Path | str, batch_size: int = 1000,
                    id_column: str | None = None, on_batch: Callable[[int, int], None] = lambda done, total: None
                    ) -> BatchResult:
    """Score every row of ``input_path``; each output row keeps its id (``id_column``, or its row number)."""
    import mlflow.pyfunc
    import pandas as pd

    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: at least 1")
    source = str(input_path)
    frame, data = _read(source)
    name = source.rsplit("/", 1)[-1]
    if id_column is not None and id_column not in frame.columns:
        raise InputError(f"--id-column {id_column}: not a column of {name} "
                         f"(columns: {', '.join(map(str, frame.columns[:20]))})")
    model = mlflow.pyfunc.load_model(model_uri)
    schema = model.metadata.get_input_schema()
    try:
        conform(frame.head(1), schema)
    except KeyError as exc:
        raise InputError(f"--input {name}: missing feature columns the model needs: {exc.args[0]}") from None
    key = id_column or ROW_COLUMN
    fingerprint = _fingerprint(data, model_uri, batch_size, key)
    if not is_s3(output) and Path(output).exists() and not Path(output).is_dir():
        raise InputError(f"--output {output}: a file, not a folder", hint="name a folder (new or this job's)")
    try:
        store = open_store(output)
    except InputError as exc:
        raise InputError(f"--output {exc.message}", hint=exc.hint) from None
    done = set(store.list_keys())
    if MANIFEST in done:
        previous = json.loads(store.get(MANIFEST))
        if previous.get("fingerprint") != fingerprint:
            raise InputError(f"--output {output} holds another job's results (other input, model or batch size)",
                             hint="choose an empty folder, or delete that one")
    total = (len(frame) + batch_size - 1) // batch_size
    manifest: dict[str, Any] = {"fingerprint": fingerprint, "model": model_uri,
                                "input": source if is_s3(source) else str(Path(source).resolve()),
                                "rows": len(frame), "batch_size": batch_size, "parts": total, "id_column": key,
                                "complete": False}
    store.put(MANIFEST, json.dumps(manifest, indent=2).encode())
    skipped = 0
    for i in range(total):
        part = f"part-{i:05d}.parquet"
        if part in done:
            skipped += 1
            on_batch(i + 1, total)
            continue
        chunk = frame.iloc[i * batch_size:(i + 1) * batch_size]
        scored = model.predict(conform(chunk, schema))
        ids = chunk[id_column].to_numpy() if id_column else chunk.index.to_numpy()
        result = pd.concat([pd.DataFrame({key: ids}), scored.reset_index(drop=True)], axis=1)  # the task's answers
        buffer = io.BytesIO()
        result.to_parquet(buffer, index=False)
        store.put(part, buffer.getvalue())  # a part exists whole or not at all
        on_batch(i + 1, total)
    manifest["complete"] = True
    store.put(MANIFEST, json.dumps(manifest, indent=2).encode())
    return BatchResult(output=store.location, rows=len(frame), parts=total, skipped_parts=skipped, id_column=key,
                       model=model_uri)


def read_output(output: Path | str) -> "pd.DataFrame":
    """Every part of a finished (or partial) batch transform, in input order."""
    import pandas as pd

    store = open_store(output)
    parts = [k for k in store.list_keys() if k.startswith("part-") and k.endswith(".parquet")]
    return (pd.concat([pd.read_parquet(io.BytesIO(store.get(p))) for p in parts], ignore_index=True) if parts
            else pd.DataFrame())
