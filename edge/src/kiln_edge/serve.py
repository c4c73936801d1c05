"""Predictions on loopback: POST /v1/predict {"instances": [rows]}, GET /v1/health (standard library only)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from kiln_edge.model import InputProblem

if TYPE_CHECKING:
    from kiln_edge.agent import Agent

MAX_BODY = 4 << 20


def start_server(agent: "Agent", port: int = 0) -> ThreadingHTTPServer:
    """Serve on 127.0.0.1 (``port`` 0: any free port; the bound one is ``server.server_address[1]``)."""

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # the standard library's name
            if self.path != "/v1/health":
                return self._send(404, {"error": f"no route {self.path}"})
            model = agent.model
            self._send(200 if model else 503, {"health": agent.health(),
                                               "active": model.manifest["id"] if model else None})

        def do_POST(self) -> None:
            if self.path != "/v1/predict":
                return self._send(404, {"error": f"no route {self.path}"})
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self._send(413, {"error": f"the body is larger than {MAX_BODY} bytes"})
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError as exc:
                return self._send(400, {"error": f"the body is not JSON: {exc}"})
            if not isinstance(body, dict) or "instances" not in body:
                return self._send(400, {"error": "the body must be an object with 'instances'"})
            try:
                self._send(200, agent.predict(body["instances"]))
            except InputProblem as exc:
                self._send(400, {"error": str(exc)})
            except RuntimeError as exc:
                self._send(503, {"error": str(exc)})

        def log_message(self, *_: Any) -> None:
            pass  # no line per request

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, name="kiln-edge-http", daemon=True).start()
    return server
