"""Where an asynchronous endpoint keeps each request and its outcome (settings' async_inference.store: a folder or an
s3:// prefix), one folder per inference id:

    <id>/request.json   the endpoint, content type, size and when it was submitted (written after the input)
    <id>/input          the request body as it came
    <id>/result.json    the answer, for a JSON request (V1: {"predictions": [...]})
    <id>/result.jsonl   the answers, one line per row, for CSV or JSON-lines input
    <id>/error.json     why it failed, when it did
    <id>/deliveries     how many times a worker was given it

An id has one outcome, written once (the first worker to finish writes it; a worker given the request again finds it
there and writes nothing), so a request delivered twice is answered once.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from kiln.errors import InputError
from kiln.storage import FolderStore, S3Store, open_store
from kiln.workspace import Workspace

# What a request may be: a V1 JSON body (answered as one JSON document), or rows (answered one line per row).
CONTENT_TYPES = {"application/json": "result.json", "text/csv": "result.jsonl", "application/x-ndjson": "result.jsonl",
                 "application/jsonl": "result.jsonl"}
ID = re.compile(r"^[0-9a-f]{32}$")
Status = Literal["pending", "done", "failed"]


@dataclass(frozen=True)
class AsyncRequest:
    """What request.json holds."""

    inference_id: str
    endpoint: str
    content_type: str
    bytes: int
    submitted: str  # ISO 8601, UTC

    @property
    def result_name(self) -> str:
        return CONTENT_TYPES[self.content_type]


@dataclass(frozen=True)
class Outcome:
    """Where an inference stands, and where its result or error is (or will be)."""

    inference_id: str
    endpoint: str
    status: Status
    output_location: str
    failure_location: str
    error: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)


def new_id() -> str:
    return uuid.uuid4().hex


def media_type(header: str | None) -> str:
    """The request's media type from its Content-Type header; InputError naming the ones taken."""
    value = (header or "application/json").split(";")[0].strip().lower()
    if value not in CONTENT_TYPES:
        raise InputError(f"content type '{value}': an asynchronous request is one of {', '.join(CONTENT_TYPES)}")
    return value


class AsyncStore:
    """The store of an endpoint's (or every endpoint's) asynchronous requests."""

    def __init__(self, root: str, endpoint_url: str | None = None) -> None:
        self.store: FolderStore | S3Store = open_store(root, endpoint_url)

    @classmethod
    def of(cls, ws: Workspace) -> AsyncStore:
        s = ws.settings.async_inference.store
        return cls(s.uri, s.endpoint_url) if s.type == "s3" else cls(s.path)

    def location(self, inference_id: str, name: str) -> str:
        return f"{self.store.location}/{inference_id}/{name}"

    def spool(self) -> Path | None:
        """Where a request's body is best written while it arrives: inside a folder store (moved into place, not
        copied); None for S3 (any local folder)."""
        if isinstance(self.store, FolderStore):
            folder = self.store.root / ".incoming"
            folder.mkdir(parents=True, exist_ok=True)
            return folder
        return None

    def add(self, request: AsyncRequest, body: Path) -> Outcome:
        """Keep a request (``body`` is moved into the store): its body first, then request.json, which makes it
        known."""
        self.store.put_file(f"{request.inference_id}/input", body, move=True)
        self.store.put(f"{request.inference_id}/request.json", json.dumps(asdict(request)).encode())
        return self._outcome(request, "pending")

    def forget(self, inference_id: str) -> None:
        """Remove a request that was never queued."""
        self.store.delete_prefix(f"{inference_id}/")

    def request(self, inference_id: str) -> AsyncRequest:
        """The request ``inference_id``; InputError when there is none."""
        if not ID.match(inference_id):
            raise InputError(f"inference id '{inference_id}': expected 32 hexadecimal digits")
        if not self.store.exists(f"{inference_id}/request.json"):
            raise InputError(f"no asynchronous request {inference_id} in {self.store.location}")
        return AsyncRequest(**json.loads(self.store.get(f"{inference_id}/request.json")))

    def input_file(self, request: AsyncRequest, path: Path) -> None:
        self.store.get_file(f"{request.inference_id}/input", path)

    def outcome(self, inference_id: str) -> Outcome:
        request = self.request(inference_id)
        if self.store.exists(f"{inference_id}/{request.result_name}"):
            return self._outcome(request, "done")
        if self.store.exists(f"{inference_id}/error.json"):
            error = json.loads(self.store.get(f"{inference_id}/error.json")).get("error")
            return self._outcome(request, "failed", error)
        return self._outcome(request, "pending")

    def delivered(self, request: AsyncRequest, again: bool) -> int:
        """Count one more delivery of the request to a worker (``again``: the broker says it was delivered before);
        how many there have been, this one included."""
        key = f"{request.inference_id}/deliveries"
        count = int(self.store.get(key)) + 1 if again and self.store.exists(key) else 1
        self.store.put(key, str(count).encode())
        return count

    def answered(self, request: AsyncRequest) -> bool:
        """Whether the request has its outcome (a result or an error) already."""
        return self.store.exists(f"{request.inference_id}/{request.result_name}") or \
            self.store.exists(f"{request.inference_id}/error.json")

    def write_result(self, request: AsyncRequest, path: Path) -> bool:
        """The result from ``path``, unless the request has its outcome; whether it was written."""
        if self.store.exists(f"{request.inference_id}/error.json"):
            return False
        return self.store.put_file(f"{request.inference_id}/{request.result_name}", path, once=True)

    def write_error(self, request: AsyncRequest, error: str, deliveries: int, scratch: Path) -> bool:
        """Why the request failed, unless it has its outcome; whether it was written."""
        if self.store.exists(f"{request.inference_id}/{request.result_name}"):
            return False
        scratch.write_text(json.dumps({"inference_id": request.inference_id, "endpoint": request.endpoint,
                                       "error": error, "deliveries": deliveries,
                                       "at": datetime.now(UTC).isoformat(timespec="seconds")}))
        return self.store.put_file(f"{request.inference_id}/error.json", scratch, once=True)

    def result_file(self, inference_id: str, path: Path) -> Outcome:
        """Copy a done request's result to ``path``; the outcome (of any status)."""
        outcome = self.outcome(inference_id)
        if outcome.status == "done":
            self.store.get_file(f"{inference_id}/{self.request(inference_id).result_name}", path)
        return outcome

    def _outcome(self, request: AsyncRequest, status: Status, error: str | None = None) -> Outcome:
        return Outcome(request.inference_id, request.endpoint, status,
                       self.location(request.inference_id, request.result_name),
                       self.location(request.inference_id, "error.json"), error)
