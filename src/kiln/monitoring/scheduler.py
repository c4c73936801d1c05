"""The process behind a monitor schedule: runs the monitor job every interval, answers /health and /v1/status.

`python -m kiln.monitoring.scheduler --workspace W --endpoint NAME --host H --port P`; started by
`kiln monitor schedule` (and `kiln up`), stopped by `kiln down` or `kiln monitor schedule --stop`.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
import traceback
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kiln.files import write_json_atomic
from kiln.monitoring.job import monitor_job
from kiln.monitoring.schedule import read_schedule, state_file
from kiln.monitoring.window import Window
from kiln.workspace import open_workspace

log = logging.getLogger("kiln.monitor.scheduler")
# Windows end this long before the tick: capture writers flush every few seconds, and a record stamped
# before a window's end but written after its run would fall between two windows.
SETTLE_SECONDS = 5.0


def _serve(host: str, port: int, status: dict[str, Any]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the http.server interface
            if self.path not in ("/health", "/v1/status"):
                self.send_error(404)
                return
            body = json.dumps({"status": "ok"} if self.path == "/health" else status, default=str).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kiln.monitoring.scheduler")
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    ws = open_workspace(args.workspace)
    schedule = read_schedule(ws, args.endpoint)
    if schedule is None:
        raise SystemExit(f"no monitor schedule for endpoint {args.endpoint}")
    every = timedelta(seconds=schedule.every_seconds)
    status: dict[str, Any] = {"endpoint": args.endpoint, "every": schedule.every, "runs": 0}
    _serve(args.host, args.port, status)
    settle = timedelta(seconds=SETTLE_SECONDS)
    since = datetime.now(UTC) - settle
    while True:
        due = since + every + settle
        status["next_run"] = due.isoformat()
        write_json_atomic(state_file(ws, args.endpoint), status, default=str)
        time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
        until = datetime.now(UTC) - settle
        log.info("monitoring %s from %s to %s", args.endpoint, since.isoformat(), until.isoformat())
        try:
            result = monitor_job(ws, args.endpoint, since, until, schedule.webhooks, schedule.on_violation,
                                 progress=log.info)
            status.update(last_run=result.run, last_status=result.status, last_rows=result.rows,
                          last_violations=len(result.violations), last_report=result.report,
                          last_outputs=result.outputs, last_error=None)
            log.info("%s: %s, %d violation(s)", result.run, result.status, len(result.violations))
        except Exception as exc:  # noqa: BLE001 - one failed run is reported; the schedule goes on
            status.update(last_status="failed", last_error=f"{type(exc).__name__}: {exc}")
            log.error("monitor run failed:\n%s", traceback.format_exc())
        status["runs"] += 1
        status["last_window"] = Window(since, until).to_dict()
        since = until


if __name__ == "__main__":
    main()
