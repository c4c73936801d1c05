"""The capture collector: the HTTP sink KServe's payload logger posts CloudEvents to, in a cluster. It writes the
same capture records, in the same layout, as a local endpoint's front (kiln.serving.capture), to the workspace's
capture store (a folder, or S3), so the monitors read either alike.

POST /ENDPOINT/VARIANT[?shadow=true]   one CloudEvent in binary mode, as KServe's logger sends it: headers ce-id
                                       (the inference id, shared by a request and its response), ce-type
                                       (org.kubeflow.serving.inference.request or .response), ce-specversion,
                                       ce-time (optional); the body is the payload
     [?by_model=true]                  a multi-model endpoint's: each record is filed under the version its
                                       response names (model_name NAME-vVERSION), as a local endpoint's front does
GET  /health                           liveness, and how many halves wait for their other half

A request and its response are paired by id and written as one record; a half whose other half has not come within
the pairing window is written alone (a request the model never answered is still a request the monitors should
count), and so is every waiting half when the collector stops. A repeated event is accepted and ignored. Malformed
events get a 4xx that names the header or the body; nothing about them is written.

Usage: python -m kiln.serving.collector --workspace WS [--host 127.0.0.1] [--port 8090] [--sample-percent 100]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kiln.serving.capture import CaptureRecord, CaptureWriter
from kiln.serving.spec import SERVED
from kiln.workspace import open_workspace

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"
SPEC_VERSIONS = ("1.0", "0.3")
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
MAX_ID = 256
MAX_BODY = 16 << 20  # bytes of one payload
MAX_WAITING = 100_000  # halves held for their other half at most; beyond it new events are refused with 503


@dataclass
class _Half:
    body: Any
    at: datetime


@dataclass
class _Pair:
    endpoint: str
    variant: str
    shadow: bool
    by_model: bool = False
    first_seen: float = field(default_factory=time.monotonic)
    request: _Half | None = None
    response: _Half | None = None


class Collector:
    """Pairs the events of each inference id and hands whole records to one capture writer per endpoint."""

    def __init__(self, root: Path | str, sample_percent: float = 100.0, pair_seconds: float = 60.0,
                 flush_seconds: float = 2.0, endpoint_url: str | None = None) -> None:
        self.root, self.sample, self.pair_seconds, self.flush_seconds = root, sample_percent, pair_seconds, flush_seconds
        self.endpoint_url = endpoint_url
        self.waiting: dict[str, _Pair] = {}
        self.writers: dict[str, CaptureWriter] = {}
        self.done: dict[str, float] = {}  # ids written lately, so a repeated event is not written twice

    def sampled(self, inference_id: str) -> bool:
        """Decided by the id, so both halves of an inference agree without waiting for each other."""
        if self.sample >= 100.0:
            return True
        bucket = int.from_bytes(hashlib.sha256(inference_id.encode()).digest()[:4], "big") % 10_000
        return bucket < self.sample * 100

    def add(self, inference_id: str, kind: str, endpoint: str, variant: str, shadow: bool, body: Any,
            at: datetime, by_model: bool = False) -> None:
        if inference_id in self.done or not self.sampled(inference_id):
            return
        pair = self.waiting.get(inference_id)
        if pair is None:
            if len(self.waiting) >= MAX_WAITING:
                raise _Busy()
            pair = self.waiting[inference_id] = _Pair(endpoint, variant, shadow, by_model)
        half = _Half(body, at)
        if kind == REQUEST:
            pair.request = pair.request or half
        else:
            pair.response = pair.response or half
        if pair.request is not None and pair.response is not None:
            self._write(inference_id)

    def sweep(self, everything: bool = False) -> int:
        """Write the halves that waited longer than the pairing window (all of them when ``everything``)."""
        now = time.monotonic()
        late = [i for i, p in self.waiting.items() if everything or now - p.first_seen >= self.pair_seconds]
        for inference_id in late:
            self._write(inference_id)
        self.done = {i: t for i, t in self.done.items() if now - t < 10 * self.pair_seconds}
        return len(late)

    def close(self) -> None:
        self.sweep(everything=True)
        for writer in self.writers.values():
            writer.close()

    def _write(self, inference_id: str) -> None:
        pair = self.waiting.pop(inference_id)
        self.done[inference_id] = time.monotonic()
        first = pair.request or pair.response
        assert first is not None  # a pair is made with one of its halves
        latency = ((pair.response.at - pair.request.at).total_seconds() * 1000
                   if pair.request and pair.response else 0.0)
        writer = self.writers.get(pair.endpoint)
        if writer is None:
            writer = self.writers[pair.endpoint] = CaptureWriter(self.root, pair.endpoint, self.flush_seconds,
                                                                 endpoint_url=self.endpoint_url)
        answer = pair.response.body if pair.response else None
        named = answer.get("model_name") if pair.by_model and isinstance(answer, dict) else None
        writer.record(CaptureRecord(
            inference_id=inference_id, timestamp=first.at.isoformat(timespec="microseconds"), endpoint=pair.endpoint,
            variant=named if isinstance(named, str) and SERVED.match(named) else pair.variant, shadow=pair.shadow, request=pair.request.body if pair.request else None,
            response=pair.response.body if pair.response else None,
            status=200 if pair.response else 0,  # KServe logs a response only when the model answered
            latency_ms=round(max(latency, 0.0), 3)))


class _Busy(Exception):
    pass


class _Malformed(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _event(request: Request, body: bytes) -> tuple[str, str, datetime, Any]:
    """The id, type, time and payload of a CloudEvent in binary mode; a malformed one names what is wrong."""
    headers = request.headers
    version = headers.get("ce-specversion")
    if version is None:
        raise _Malformed(400, "header ce-specversion is missing: not a CloudEvent in binary mode")
    if version not in SPEC_VERSIONS:
        raise _Malformed(400, f"header ce-specversion {version!r}: expected one of {', '.join(SPEC_VERSIONS)}")
    inference_id = headers.get("ce-id", "")
    if not inference_id.strip() or len(inference_id) > MAX_ID:
        raise _Malformed(400, f"header ce-id must be 1 to {MAX_ID} characters (the inference id)")
    kind = headers.get("ce-type", "")
    if kind not in (REQUEST, RESPONSE):
        raise _Malformed(400, f"header ce-type {kind!r}: expected {REQUEST} or {RESPONSE}")
    stamp = headers.get("ce-time")
    try:
        at = datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else datetime.now(UTC)
    except ValueError:
        raise _Malformed(400, f"header ce-time {stamp!r}: not an RFC 3339 time") from None
    at = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
    if not body:
        raise _Malformed(400, "the body is empty: the event carries no payload")
    content_type = headers.get("content-type", "application/json").split(";")[0].strip()
    if content_type.endswith("json"):
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise _Malformed(400, f"the body is not JSON, though content-type is {content_type}") from None
    else:
        payload = {"unparsed": body[:2000].decode("utf-8", "replace"), "content_type": content_type}
    return inference_id, kind, at, payload


def build_app(collector: Collector, sweep_seconds: float = 1.0) -> Starlette:
    async def post(request: Request) -> JSONResponse:
        endpoint, variant = request.path_params["endpoint"], request.path_params["variant"]
        for what, name in (("endpoint", endpoint), ("variant", variant)):
            if not NAME.match(name):
                return JSONResponse({"error": f"{what} {name!r} in the path is not a DNS label"}, status_code=400)
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY:
            return JSONResponse({"error": f"the body is over {MAX_BODY} bytes"}, status_code=413)
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": f"the body is over {MAX_BODY} bytes"}, status_code=413)
        try:
            inference_id, kind, at, payload = _event(request, body)
            shadow, by_model = (request.query_params.get(flag, "false").lower() in ("1", "true", "yes")
                                for flag in ("shadow", "by_model"))
            collector.add(inference_id, kind, endpoint, variant, shadow, payload, at, by_model)
        except _Malformed as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        except _Busy:
            return JSONResponse({"error": f"{MAX_WAITING} events wait for their other half; try again"},
                                status_code=503, headers={"Retry-After": "1"})
        return JSONResponse({"accepted": inference_id}, status_code=202)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "waiting": len(collector.waiting)})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def sweeping() -> None:
            while True:
                await asyncio.sleep(sweep_seconds)
                collector.sweep()

        task = asyncio.create_task(sweeping())
        try:
            yield
        finally:
            task.cancel()
            collector.close()  # every waiting half written, every writer flushed

    return Starlette(routes=[Route("/health", health), Route("/{endpoint}/{variant}", post, methods=["POST"])],
                     lifespan=lifespan)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workspace", type=Path, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--sample-percent", type=float, default=100.0)
    p.add_argument("--pair-seconds", type=float, default=60.0, help="How long a half waits for its other half.")
    args = p.parse_args(argv)
    if not 0 < args.sample_percent <= 100:
        raise SystemExit(f"--sample-percent {args.sample_percent}: expected more than 0 and at most 100")
    store = open_workspace(args.workspace).settings.capture
    collector = (Collector(store.uri, args.sample_percent, args.pair_seconds, endpoint_url=store.endpoint_url)
                 if store.type == "s3" else Collector(Path(store.path), args.sample_percent, args.pair_seconds))
    uvicorn.run(build_app(collector), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
