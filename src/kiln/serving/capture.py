"""Data capture: every sampled request and response of an endpoint, written in batches off the request path.

Records are JSON lines under CAPTURE/endpoint=NAME/hour=YYYY-MM-DDTHH/, one file per writer process. JSON lines
rather than parquet: a batch is appended and fsynced, so a crash loses at most the batch in memory and can tear
only the last line, which readers skip. On S3 (CAPTURE is s3://BUCKET/PREFIX) an object cannot be appended to:
each batch is an object of its own, visible whole or not at all, so a crash loses at most the batch in memory there
too, and a batch the store refused is kept and written with the next. (KServe's payload logger posts to the capture
collector in a cluster, kiln.serving.collector; locally the front writes here itself.)
"""

from __future__ import annotations

import json
import os
import random
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kiln.errors import ServiceError
from kiln.memory import release_freed
from kiln.progress import Progress, no_progress
from kiln.storage import S3Store, is_s3

MAX_BUFFER = 50_000  # records held in memory at most; beyond it new records are counted as dropped
RELEASE_AFTER = 2_000  # records in one flush that make a backlog: once flushes are smaller again, memory is released


@dataclass(slots=True)  # a backlog holds tens of thousands: no dict each
class CaptureRecord:
    inference_id: str
    timestamp: str  # ISO 8601, UTC
    endpoint: str
    variant: str
    shadow: bool
    request: Any  # raw bytes from the request path; parsed as JSON by the writer thread
    response: Any
    status: int
    latency_ms: float
    # V2's binary tensor extension: the JSON part's length when the request (or answer) was binary; the writer
    # stores it as the V2 JSON form, tensors as lists
    request_binary_header: int | None = None
    response_binary_header: int | None = None


class CaptureWriter:
    """Buffers records (sampled) and appends them to the capture store from a background thread."""

    def __init__(self, root: Path | str, endpoint: str, flush_seconds: float = 2.0, sample_percent: float = 100.0,
                 seed: int | None = None, endpoint_url: str | None = None) -> None:
        self.s3 = S3Store(str(root), endpoint_url) if is_s3(root) else None
        self.root, self.endpoint = Path(root), endpoint
        self._batches = 0  # S3: each batch its own object, numbered
        self.flush_seconds, self.sample = flush_seconds, sample_percent / 100
        self._buffer: deque[CaptureRecord] = deque()
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one flush at a time (the thread's, or close()'s)
        self.written = self.dropped = self.failed_flushes = 0
        self._file_name = f"capture-{os.getpid()}-{int(time.time() * 1000)}.jsonl"
        self._thread = threading.Thread(target=self._run, name=f"capture-{endpoint}", daemon=True)
        self._thread.start()

    def sampled(self) -> bool:
        """Whether the next request is captured (decided once per request, for its production and shadow sides)."""
        return self.sample >= 1.0 or self._random.random() < self.sample

    def record(self, rec: CaptureRecord) -> None:
        """Queue one record; never blocks and never raises on the request path."""
        if len(self._buffer) >= MAX_BUFFER:
            self.dropped += 1
            return
        self._buffer.append(rec)

    def _run(self) -> None:
        backlog = False  # a flush since the last release wrote a backlog's worth
        while not self._stop.wait(self.flush_seconds):
            written = self.flush()
            if written >= RELEASE_AFTER:
                backlog = True
            elif backlog:  # the backlog is written: the heap it grew goes back to the system
                release_freed()
                backlog = False

    def flush(self) -> int:
        """Append every queued record to its hour's file; returns how many were written."""
        with self._lock:
            batch = []
            while self._buffer:
                batch.append(self._buffer.popleft())
            by_hour: dict[str, list[str]] = {}
            for rec in batch:
                by_hour.setdefault(rec.timestamp[:13], []).append(_line(rec))
            if self.s3 is not None:
                return self._put(batch, by_hour)
            for hour, lines in by_hour.items():
                folder = self.root / f"endpoint={self.endpoint}" / f"hour={hour}"
                folder.mkdir(parents=True, exist_ok=True)
                with (folder / self._file_name).open("a", encoding="utf-8") as f:
                    f.write("\n".join(lines) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            self.written += len(batch)
            return len(batch)

    def _put(self, batch: list[CaptureRecord], by_hour: dict[str, list[str]]) -> int:
        """One object per hour of the batch; a batch the store refused goes back to the front of the queue."""
        assert self.s3 is not None
        done: list[str] = []
        try:
            for hour, lines in by_hour.items():
                self._batches += 1
                key = f"endpoint={self.endpoint}/hour={hour}/{self._file_name[:-6]}-{self._batches:06d}.jsonl"
                self.s3.put(key, ("\n".join(lines) + "\n").encode())
                done.append(hour)
        except ServiceError:
            self.failed_flushes += 1
            kept = [r for r in batch if r.timestamp[:13] not in done]
            self._buffer.extendleft(reversed(kept))
            written = len(batch) - len(kept)
            self.written += written
            return written
        self.written += len(batch)
        return len(batch)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.flush_seconds + 5)
        self.flush()


def _line(rec: CaptureRecord) -> str:
    """One record as a JSON line, request and answer decoded here, off the request path. A 200's bodies are
    written as they came, unparsed: the variant's server read the request and wrote the answer with a strict JSON
    parser and writer, so both are JSON already."""
    import orjson

    row: dict[str, Any] = {"inference_id": rec.inference_id, "timestamp": rec.timestamp, "endpoint": rec.endpoint,
                           "variant": rec.variant, "shadow": rec.shadow}
    for key, body, binary in (("request", rec.request, rec.request_binary_header),
                              ("response", rec.response, rec.response_binary_header)):
        if not isinstance(body, (bytes, bytearray)):
            row[key] = body
        elif binary is not None:
            row[key] = binary_v2(bytes(body), binary, key)
        else:
            row[key] = orjson.Fragment(bytes(body)) if rec.status == 200 else parsed(bytes(body))
    row["status"], row["latency_ms"] = rec.status, rec.latency_ms
    return orjson.dumps(row, default=str).decode()


STRUCT = {"BOOL": "?", "UINT8": "B", "UINT16": "H", "UINT32": "I", "UINT64": "Q", "INT8": "b", "INT16": "h",
          "INT32": "i", "INT64": "q", "FP16": "e", "FP32": "f", "FP64": "d"}  # V2 datatypes, little-endian


def binary_v2(raw: bytes, json_length: int, kind: str) -> Any:
    """A V2 request or answer in the binary tensor extension as its JSON form (tensors as flat lists); what cannot
    be read is kept as its first 2,000 characters. Read here rather than by KServe's decoder: importing KServe
    parses the process's command line, which is the front's, not KServe's."""
    import orjson

    key = "inputs" if kind == "request" else "outputs"
    try:
        doc = orjson.loads(raw[:json_length])
        at = json_length
        for tensor in doc[key]:
            size = (tensor.get("parameters") or {}).pop("binary_data_size", None)
            if size is None:
                continue
            tensor["data"] = _tensor_values(raw[at:at + size], tensor["datatype"])
            at += size
        return doc
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, struct.error):
        return {"unparsed": raw[:2000].decode("utf-8", "replace")}


def _tensor_values(data: bytes, datatype: str) -> list[Any]:
    if datatype == "BYTES":  # each element: its length (4 bytes, little-endian), then its bytes
        values, at = [], 0
        while at < len(data):
            (n,) = struct.unpack_from("<I", data, at)
            values.append(data[at + 4:at + 4 + n].decode("utf-8", "replace"))
            at += 4 + n
        return values
    code = STRUCT[datatype]
    return list(struct.unpack(f"<{len(data) // struct.calcsize(code)}{code}", data))


def parsed(raw: bytes) -> Any:
    """A body as JSON, or its first 2,000 characters when it is not JSON."""
    import orjson

    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw)  # NaN and Infinity, which orjson refuses
    except (ValueError, UnicodeDecodeError):
        return {"unparsed": raw[:2000].decode("utf-8", "replace")}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def answered_record(inference_id: str, endpoint: str, variant: str, shadow: bool, body: bytes, data: bytes,
                    status: int, ms: float, request_binary: bytes | None, response_binary: bytes | None,
                    at: float | None = None) -> CaptureRecord:
    """The record of one answered request (``request_binary``, ``response_binary``: V2's binary extension's header
    values, if any; ``at``: when it was answered, as time.time(), by default now)."""
    def length(header: bytes | None) -> int | None:
        return int(header) if header is not None and header.isdigit() else None

    stamp = now_iso() if at is None else datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds")
    return CaptureRecord(inference_id=inference_id, timestamp=stamp, endpoint=endpoint, variant=variant,
                         shadow=shadow, request=body, response=data, status=status, latency_ms=round(ms, 3),
                         request_binary_header=length(request_binary), response_binary_header=length(response_binary))


def read_capture(root: Path | str, endpoint: str, since: datetime | None = None,
                 until: datetime | None = None, endpoint_url: str | None = None) -> Iterator[dict[str, Any]]:
    """Every record of ``endpoint`` in [since, until), oldest hour first; a torn last line (a crash) is skipped."""
    lo = since.astimezone(UTC).isoformat() if since else ""
    hi = until.astimezone(UTC).isoformat() if until else "~"
    import orjson  # several times faster than json on the large windows monitors read

    if is_s3(root):
        yield from _read_s3(S3Store(str(root), endpoint_url), endpoint, lo, hi)
        return
    base = Path(root) / f"endpoint={endpoint}"
    if not base.is_dir():
        return
    for folder in sorted(base.glob("hour=*")):
        hour = folder.name.removeprefix("hour=")
        if hour < lo[:13] or hour > hi[:13]:
            continue
        for path in sorted(folder.glob("*.jsonl")):
            with path.open("rb") as f:
                for line in f:
                    try:
                        rec = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        continue  # only a crash mid-append leaves one: the torn last line of a file
                    if lo <= rec["timestamp"] < hi:
                        yield rec


def _read_s3(store: S3Store, endpoint: str, lo: str, hi: str) -> Iterator[dict[str, Any]]:
    import orjson

    for key in store.list_keys(f"endpoint={endpoint}/hour="):
        hour = key.split("/")[1].removeprefix("hour=")
        if hour < lo[:13] or hour > hi[:13] or not key.endswith(".jsonl"):
            continue
        for line in store.get(key).splitlines():
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if lo <= rec["timestamp"] < hi:
                yield rec


def wait_for_capture(root: Path | str, endpoint: str, since: datetime, expected: int,
                     progress: Progress = no_progress, timeout: float = 60.0) -> int:
    """Wait until ``endpoint``'s capture holds ``expected`` production records since ``since`` (the front's writer
    flushes in the background, later under load); how many it holds back, or ServiceError after ``timeout``."""

    deadline = time.monotonic() + timeout
    while True:
        written = sum(1 for r in read_capture(root, endpoint, since) if not r.get("shadow"))
        if written >= expected:
            return written
        if time.monotonic() > deadline:
            raise ServiceError(f"endpoint {endpoint} captured {written} of {expected} requests in {timeout:.0f} s",
                               hint=f"its front's log: `kiln endpoint status {endpoint}`")
        progress(f"waiting for the capture: {written} of {expected} requests written")
        time.sleep(0.5)
