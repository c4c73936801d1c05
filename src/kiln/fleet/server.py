"""The distribution point: published bundles over plain HTTP (ranges, so devices resume), heartbeats, samples.

GET  /v1/health                        liveness
GET  /v1/targets/T/latest              the newest published bundle for target T: id, created, files with sizes
GET  /v1/artifacts/ID/FILE             one file of a published bundle (Range requests answered)
GET  /v1/keys/signing-key.pub          the workspace's public key (devices should be given it, not trust this)
POST /v1/devices/ID/heartbeat          {target, health, active, model, interval_seconds, details}
POST /v1/devices/ID/capture            {records: [{inference_id, timestamp, artifact, request, response, ...}]}
GET  /v1/devices                       the fleet
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from kiln.compile.keys import public_key_path
from kiln.compile.store import latest_published, published_file
from kiln.errors import InputError, ServiceError
from kiln.fleet.devices import DEVICE_ID, check_heartbeat, fleet_db, list_devices, record_heartbeat
from kiln.fleet.samples import write_samples
from kiln.workspace import Workspace, open_workspace

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")
MAX_BODY = 8 << 20  # bytes a device may send in one request
MAX_RECORDS = 10_000


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _json_body(request: Request) -> Any:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_BODY:
        raise _TooLarge()
    body = await request.body()
    if len(body) > MAX_BODY:
        raise _TooLarge()
    try:
        return json.loads(body)
    except ValueError as exc:
        raise InputError(f"the body is not JSON: {exc}") from None


class _TooLarge(Exception):
    pass


def build_app(ws: Workspace) -> Starlette:
    db = fleet_db(ws)

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def latest(request: Request) -> Response:
        target = request.path_params["target"]
        try:
            found = await run_in_threadpool(latest_published, ws, target) if NAME.match(target) else None
        except ServiceError as exc:  # the artifacts store (S3) does not answer
            return _error(503, exc.message)
        if found is None:
            return _error(404, f"no artifact is published for target '{target[:40]}'")
        return JSONResponse(found)

    async def artifact_file(request: Request) -> Response:
        artifact, name = request.path_params["artifact"], request.path_params["name"]
        if not (NAME.match(artifact) and NAME.match(name)):
            return _error(400, "artifact id and file name: letters, digits, '.', '_' and '-' only")
        try:
            path = await run_in_threadpool(published_file, ws, artifact, name)
        except ServiceError as exc:
            return _error(503, exc.message)
        if path is None:
            return _error(404, f"no file '{name}' in published artifact '{artifact}'")
        return FileResponse(path)

    async def public_key(_: Request) -> Response:
        path = public_key_path(ws)
        return FileResponse(path) if path.is_file() else _error(404, "no signing key yet: nothing was compiled")

    async def heartbeat(request: Request) -> Response:
        try:
            device = check_heartbeat(request.path_params["device"], await _json_body(request))
        except InputError as exc:
            return _error(400, exc.message)
        except _TooLarge:
            return _error(413, f"the body is larger than {MAX_BODY} bytes")
        record_heartbeat(db, device)
        return JSONResponse({"device": device.device_id, "recorded": device.last_seen})

    async def capture(request: Request) -> Response:
        device = request.path_params["device"]
        if not DEVICE_ID.match(device):
            return _error(400, "device id: 1-64 letters, digits, '.', '_' or '-'")
        try:
            body = await _json_body(request)
            written = write_samples(ws, device, body, MAX_RECORDS)
        except InputError as exc:
            return _error(400, exc.message)
        except _TooLarge:
            return _error(413, f"the body is larger than {MAX_BODY} bytes")
        return JSONResponse({"device": device, "written": written})

    async def devices(_: Request) -> Response:
        return JSONResponse([asdict(d) for d in list_devices(db)])

    return Starlette(routes=[
        Route("/v1/health", health),
        Route("/v1/targets/{target}/latest", latest),
        Route("/v1/artifacts/{artifact}/{name}", artifact_file),
        Route("/v1/keys/signing-key.pub", public_key),
        Route("/v1/devices/{device}/heartbeat", heartbeat, methods=["POST"]),
        Route("/v1/devices/{device}/capture", capture, methods=["POST"]),
        Route("/v1/devices", devices),
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Kiln's artifact distribution point and fleet endpoint")
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = build_app(open_workspace(args.workspace))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
