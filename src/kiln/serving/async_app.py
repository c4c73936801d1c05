"""An asynchronous endpoint's front: takes each request (stored whole, then queued on the broker) and answers at once
with its inference id and where its result or error will appear; serves those outcomes; reports the queue's backlog
(/metrics, /kiln/status); and, on a local endpoint, runs the workers the backlog asks for (kiln.serving.async_scaler).

    POST /v1/models/NAME:predict   a V1 JSON body, CSV (header row) or JSON lines: 202 {inference_id, ...}
    GET  /kiln/async/ID            the request's outcome: pending, done or failed (with the error)
    GET  /kiln/async/ID/result     its result, once done

    python -m kiln.serving.async_app --config ASYNC.json --port 8080 [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from kiln.errors import InputError, ServiceError
from kiln.serving.async_config import AsyncFrontConfig
from kiln.serving.async_queue import Queue, Work
from kiln.serving.async_scaler import Scaler
from kiln.serving.async_store import AsyncRequest, AsyncStore, media_type, new_id


class AsyncFront:
    def __init__(self, config: AsyncFrontConfig) -> None:
        self.config = config
        self.store = AsyncStore(config.store, config.store_endpoint_url)
        self.queue = Queue(config.broker_url, config.queue)
        self.scaler = Scaler(config.scaler) if config.scaler else None
        self.token = os.environ.get(config.token_env) if config.token_env else None
        self.accepted = self.refused = 0
        self.backlog: int | None = None
        self.ready = False
        self._tasks: list[asyncio.Task[None]] = []

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await self.queue.open()
        self.ready = True
        if self.scaler is not None:
            self._tasks.append(asyncio.create_task(self.scaler.run(self._backlog)))
            self._tasks[-1].add_done_callback(_report_end)
        yield
        for task in self._tasks:
            task.cancel()
        await self.queue.close()

    async def _backlog(self) -> int:
        self.backlog = await self.queue.backlog()
        return self.backlog

    def _refused(self, status: int, message: str) -> JSONResponse:
        self.refused += 1
        return JSONResponse({"error": message}, status_code=status)

    async def accept(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name != self.config.endpoint:
            return self._refused(404, f"no model '{name}' here; this endpoint serves '{self.config.endpoint}'")
        if self.token is not None and not hmac.compare_digest(
                request.headers.get("authorization", "").encode(), f"Bearer {self.token}".encode()):
            return self._refused(401, "missing or wrong bearer token")
        try:
            content_type = media_type(request.headers.get("content-type"))
        except InputError as exc:
            return self._refused(415, exc.message)
        limit = self.config.max_payload_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return self._refused(413, f"request body of {int(declared)} bytes is over the limit of {limit} bytes "
                                      "(async_inference.max_payload_mb)")
        inference_id = new_id()
        handle, name = tempfile.mkstemp(prefix=f".{inference_id}-", dir=self.store.spool())
        os.close(handle)
        spooled = Path(name)
        try:
            size = await self._receive(request, spooled, limit)
            if size is None:
                return self._refused(413, f"request body over the limit of {limit} bytes "
                                          "(async_inference.max_payload_mb)")
            if size == 0:
                return self._refused(400, "the request body is empty")
            record = AsyncRequest(inference_id, self.config.endpoint, content_type, size,
                                  datetime.now(UTC).isoformat(timespec="milliseconds"))
            outcome = await asyncio.to_thread(self.store.add, record, spooled)
        except ClientDisconnect:
            return self._refused(400, "the client went away before the whole body arrived")
        except ServiceError as exc:
            return self._refused(503, f"the request could not be stored: {exc.message}")
        finally:
            spooled.unlink(missing_ok=True)
        try:
            await self.queue.publish(Work(inference_id, self.config.endpoint))
        except ServiceError as exc:
            await asyncio.to_thread(self.store.forget, inference_id)  # never queued: nothing of it is kept
            return self._refused(503, exc.message)
        self.accepted += 1
        if self.scaler is not None:
            self.scaler.wake()
        return JSONResponse(outcome.to_dict(), status_code=202, headers={
            "x-kiln-inference-id": inference_id, "location": f"/kiln/async/{inference_id}"})

    @staticmethod
    async def _receive(request: Request, path: Path, limit: int) -> int | None:
        """Write the body to ``path`` as it arrives; its size, or None once it passes ``limit``."""
        size = 0
        with path.open("wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    return None
                f.write(chunk)
        return size

    async def outcome(self, request: Request) -> Response:
        try:
            found = await asyncio.to_thread(self.store.outcome, request.path_params["id"])
        except InputError as exc:
            return JSONResponse({"error": exc.message}, status_code=404)
        return JSONResponse(found.to_dict())

    async def result(self, request: Request) -> Response:
        folder = Path(tempfile.mkdtemp(prefix="kiln-async-result-"))
        target = folder / "result"
        try:
            found = await asyncio.to_thread(self.store.result_file, request.path_params["id"], target)
        except InputError as exc:
            os.rmdir(folder)
            return JSONResponse({"error": exc.message}, status_code=404)
        if found.status != "done":
            os.rmdir(folder)
            return JSONResponse(found.to_dict(), status_code=409 if found.status == "failed" else 202)
        media = "application/json" if found.output_location.endswith(".json") else "application/x-ndjson"
        return FileResponse(target, media_type=media, background=BackgroundTask(_remove, folder))

    async def status(self, request: Request) -> Response:
        s = self.scaler
        return JSONResponse({
            "endpoint": self.config.endpoint, "mode": "async", "backlog": self.backlog, "accepted": self.accepted,
            "refused": self.refused, "workers": s.workers if s else None,
            "scaling": {"min": s.config.min, "max": s.config.max, "backlog_per_worker": s.config.backlog_per_worker,
                        "idle_seconds": s.config.idle_seconds, "started": s.starts, "stopped": s.stops,
                        "problem": s.problem} if s else None})

    async def metrics(self, request: Request) -> Response:
        if self.scaler is None:  # nothing polls the queue here: ask it now
            with contextlib.suppress(Exception):
                await self._backlog()
        e = f'endpoint="{self.config.endpoint}"'
        lines = ["# HELP kiln_async_backlog Requests waiting in the queue for a worker.",
                 "# TYPE kiln_async_backlog gauge", f"kiln_async_backlog{{{e}}} {self.backlog or 0}",
                 "# HELP kiln_async_accepted_total Requests stored and queued.",
                 "# TYPE kiln_async_accepted_total counter", f"kiln_async_accepted_total{{{e}}} {self.accepted}",
                 "# HELP kiln_async_refused_total Requests refused before they were queued.",
                 "# TYPE kiln_async_refused_total counter", f"kiln_async_refused_total{{{e}}} {self.refused}"]
        if self.scaler is not None:
            lines += ["# HELP kiln_async_workers Workers running.", "# TYPE kiln_async_workers gauge",
                      f"kiln_async_workers{{{e}}} {self.scaler.workers}"]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready_check(self, request: Request) -> Response:
        return JSONResponse({"ready": self.ready}, status_code=200 if self.ready else 503)

    def app(self) -> Starlette:
        return Starlette(lifespan=self.lifespan, routes=[
            Route("/v1/models/{name}:predict", self.accept, methods=["POST"]),
            Route("/v2/models/{name}/infer", self.accept, methods=["POST"]),  # V2 JSON: answered as V2
            Route("/kiln/async/{id}", self.outcome),
            Route("/kiln/async/{id}/result", self.result),
            Route("/kiln/status", self.status),
            Route("/metrics", self.metrics),
            Route("/v2/health/live", self.live),
            Route("/v2/health/ready", self.ready_check),
        ])


def _report_end(task: asyncio.Task[None]) -> None:
    """The scaler runs for the front's whole life: if it ends otherwise, its error goes to the log."""
    if not task.cancelled() and task.exception() is not None:
        logging.getLogger("kiln.async_app").error("the scaler stopped", exc_info=task.exception())


def _remove(folder: Path) -> None:
    for p in folder.iterdir():
        p.unlink(missing_ok=True)
    folder.rmdir()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="An asynchronous endpoint's front")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    front = AsyncFront(AsyncFrontConfig.read(args.config))
    uvicorn.run(front.app(), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
