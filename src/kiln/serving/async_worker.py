"""An asynchronous endpoint's worker: takes one queued request at a time, scores it with the endpoint's model in
chunks of rows, writes the result (or the error) to the async store once, notifies the endpoint's webhook, and only
then acknowledges the message. Stopped (SIGTERM), it takes no new request and finishes the one under way.

    python -m kiln.serving.async_worker --worker-config WORKER.json [--health-port PORT --host HOST]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.serving.async_queue import Work, connect, declare
from kiln.serving.async_store import AsyncRequest, AsyncStore, Outcome
from kiln.serving.async_v2 import V2Invalid, is_v2, score_v2
from kiln.serving.capture import CaptureRecord, CaptureWriter, now_iso
from kiln.serving.runtimes import get_runtime

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage

    from kiln.serving.runtime import KilnModel

log = logging.getLogger("kiln.async_worker")
NOTIFY_ATTEMPTS = 3


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs (written by the deploy as JSON beside the endpoint's state)."""

    endpoint: str
    variant: str
    model_uri: str  # what the runtime loads: models:/NAME/VERSION, or a compiled bundle's folder
    runtime: str
    broker_url: str
    queue: str
    store: str  # the async store's folder or s3:// prefix
    store_endpoint_url: str | None = None
    chunk_rows: int = 1000
    max_deliveries: int = 3
    success_url: str | None = None
    error_url: str | None = None
    capture: str | None = None  # the capture store, when the endpoint captures
    capture_endpoint_url: str | None = None
    capture_percent: float = 100.0
    capture_flush_seconds: float = 2.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RequestFailed(Exception):
    """The request cannot be answered (unreadable input, rows the model refuses): its error outcome says why."""


def read_json(path: Path) -> Any:
    import orjson

    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise RequestFailed(f"the body is not JSON: {exc}") from None


def rows_of(path: Path, content_type: str, chunk: int, body: Any = None) -> Iterator[list[dict[str, Any]]]:
    """The request's rows, ``chunk`` at a time: a V1 body's instances (``body``, parsed already, or read from
    ``path``), a CSV's rows (header first) or JSON lines."""
    import orjson

    if content_type == "application/json":
        body = read_json(path) if body is None else body
        instances = body.get("instances") if isinstance(body, dict) else None
        if not isinstance(instances, list) or not instances:
            raise RequestFailed("a JSON request is a V1 body (an object with a non-empty list 'instances') or a "
                                "V2 one ('inputs')")
        for start in range(0, len(instances), chunk):
            yield instances[start:start + chunk]
    elif content_type == "text/csv":
        yield from _csv_rows(path, chunk)
    else:
        batch: list[dict[str, Any]] = []
        with path.open("rb") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise RequestFailed(f"line {number}: not JSON: {exc}") from None
                if not isinstance(row, dict):
                    raise RequestFailed(f"line {number}: a row is a JSON object of feature values")
                batch.append(row)
                if len(batch) == chunk:
                    yield batch
                    batch = []
        if batch:
            yield batch


def _csv_rows(path: Path, chunk: int) -> Iterator[list[dict[str, Any]]]:
    import pandas as pd

    try:
        for frame in pd.read_csv(path, chunksize=chunk):
            frame = frame.astype(object).where(frame.notna(), None)  # empty cells are missing values
            yield frame.to_dict("records")
    except (ValueError, pd.errors.ParserError) as exc:
        raise RequestFailed(f"the CSV cannot be read: {exc}") from None


def score(model: KilnModel, request: AsyncRequest, body: Path, out: Path, chunk: int,
          capture: CaptureWriter | None, variant: str) -> int:
    """Write the request's answer to ``out`` (one JSON document, or a line per row); the rows scored."""
    import orjson
    from kserve.errors import InvalidInput

    json_body, done = request.content_type == "application/json", 0
    doc = read_json(body) if json_body else None
    if is_v2(doc):
        try:
            return score_v2(model, request, doc, out, chunk, capture, variant)
        except V2Invalid as exc:
            raise RequestFailed(str(exc)) from None
    with out.open("wb") as f:
        f.write(b'{"predictions": [' if json_body else b"")
        for rows in rows_of(body, request.content_type, chunk, doc):
            try:
                answer = model.predict({"instances": rows})["predictions"]
            except InvalidInput as exc:
                raise RequestFailed(f"rows {done + 1}-{done + len(rows)}: {exc}") from None
            if json_body:
                f.write(b"," if done else b"")
                f.write(b",".join(orjson.dumps(a, option=orjson.OPT_SERIALIZE_NUMPY) for a in answer))
            else:
                f.writelines(orjson.dumps(a, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n" for a in answer)
            if capture is not None and capture.sampled():
                capture.record(CaptureRecord(
                    inference_id=f"{request.inference_id}-{done // chunk}", timestamp=now_iso(),
                    endpoint=request.endpoint, variant=variant, shadow=False,
                    request=orjson.dumps({"instances": rows}),
                    response=orjson.dumps({"predictions": answer}, option=orjson.OPT_SERIALIZE_NUMPY),
                    status=200, latency_ms=0.0))
            done += len(rows)
        f.write(b"]}" if json_body else b"")
    return done


class Worker:
    def __init__(self, config: WorkerConfig, model: KilnModel, scratch: Path) -> None:
        self.config, self.model, self.scratch = config, model, scratch
        self.store = AsyncStore(config.store, config.store_endpoint_url)
        self.capture: CaptureWriter | None = None
        if config.capture:
            self.capture = CaptureWriter(config.capture, config.endpoint, config.capture_flush_seconds,
                                         config.capture_percent, endpoint_url=config.capture_endpoint_url)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        """One delivery: its outcome written (once) and notified, then acknowledged."""
        try:
            work = Work.parse(message.body)
            request = self.store.request(work.inference_id)
        except Exception as exc:  # noqa: BLE001 - a message no request matches is dropped, and said so
            log.error("dropped a message that names no request: %s", exc)
            await message.reject(requeue=False)
            return
        count = self.store.delivered(request, bool(message.redelivered))
        if self.store.answered(request):  # delivered again after a worker stopped before its acknowledgement
            await self.notify(self.store.outcome(request.inference_id))
            await message.ack()
            return
        if count > self.config.max_deliveries:
            error = (f"delivered {count} times: each worker it reached stopped before answering it "
                     f"(async_inference.max_deliveries is {self.config.max_deliveries})")
            self.store.write_error(request, error, count, self.scratch / "error.json")
        else:
            await asyncio.to_thread(self._answer, request, count)
        await self.notify(self.store.outcome(request.inference_id))
        await message.ack()

    def _answer(self, request: AsyncRequest, count: int) -> None:
        body, out = self.scratch / "input", self.scratch / "result"
        started = time.monotonic()
        try:
            self.store.input_file(request, body)
            rows = score(self.model, request, body, out, self.config.chunk_rows, self.capture, self.config.variant)
            written = self.store.write_result(request, out)
            log.info("%s: %d rows in %.2f s%s", request.inference_id, rows, time.monotonic() - started,
                     "" if written else " (already answered)")
        except RequestFailed as exc:
            self.store.write_error(request, str(exc), count, self.scratch / "error.json")
            log.info("%s: failed: %s", request.inference_id, exc)
        finally:
            body.unlink(missing_ok=True)
            out.unlink(missing_ok=True)

    async def notify(self, outcome: Outcome) -> None:
        """POST the outcome to the endpoint's webhook for it, a few times if it does not answer 2xx."""
        import httpx

        url = self.config.success_url if outcome.status == "done" else self.config.error_url
        if url is None:
            return
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
            for attempt in range(NOTIFY_ATTEMPTS):
                try:
                    res = await client.post(url, json=outcome.to_dict())
                    if res.is_success:
                        return
                    log.warning("webhook %s answered %s", url, res.status_code)
                except httpx.HTTPError as exc:
                    log.warning("webhook %s: %s", url, exc)
                await asyncio.sleep(0.5 * 2 ** attempt)
        log.error("%s: webhook %s not reached after %d attempts", outcome.inference_id, url, NOTIFY_ATTEMPTS)

    def close(self) -> None:
        if self.capture is not None:
            self.capture.close()


async def health(busy: asyncio.Lock, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """GET /health: 200 once the worker consumes, with whether it holds a request (what its scaler asks before
    stopping it); a hand-written answer, as the worker serves nothing else over HTTP."""
    try:
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        body = json.dumps({"ready": True, "busy": busy.locked()}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                     b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        await writer.drain()
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
        pass
    finally:
        writer.close()


async def serve(worker: Worker, host: str = "127.0.0.1", health_port: int = 0) -> None:
    """Consume the endpoint's queue until SIGTERM, one request at a time; with ``health_port``, answer health
    checks on it."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    connection = await connect(worker.config.broker_url)
    busy = asyncio.Lock()

    async def on_message(message: AbstractIncomingMessage) -> None:
        async with busy:
            await worker.handle(message)

    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1)  # one at a time: the rest wait in the queue for other workers
        queue = await declare(channel, worker.config.queue)
        tag = await queue.consume(on_message)
        server = await asyncio.start_server(lambda r, w: health(busy, r, w), host, health_port) \
            if health_port else None
        log.info("%s: worker %d waiting for requests", worker.config.endpoint, os.getpid())
        await stop.wait()
        await queue.cancel(tag)
        async with busy:  # the request under way is answered before the worker goes
            pass
        if server is not None:
            server.close()
    finally:
        await connection.close()
        worker.close()
        log.info("%s: worker %d stopped", worker.config.endpoint, os.getpid())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="An asynchronous endpoint's worker")
    # not --config: KServe parses the command line when it is imported, and takes that for its --configure_logging
    parser.add_argument("--worker-config", required=True, type=Path)
    parser.add_argument("--health-port", type=int, default=0, help="0: no health checks answered")
    parser.add_argument("--host", default="127.0.0.1", help="Where health checks are answered.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)  # as kiln.serving.server: metrics of its own
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        config = WorkerConfig(**json.loads(args.worker_config.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise SystemExit(f"error: --worker-config {args.worker_config}: not a worker's configuration ({exc})") from None
    model = get_runtime(config.runtime).model_type()(config.endpoint, config.model_uri)
    model.load()
    scratch = Path(tempfile.mkdtemp(prefix=f"kiln-async-{config.endpoint}-"))
    try:
        asyncio.run(serve(Worker(config, model, scratch), args.host, args.health_port))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
