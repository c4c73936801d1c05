"""Asynchronous inference against real-time, on the same registered model (LightGBM, 20 features), RabbitMQ on loopback.

1. Real-time: the model's real-time endpoint (one variant, capture off) at 8 connections, one row a request, 10 s.
2. Async, 1,000 one-row requests: queued 8 at a time by HTTP on the async endpoint (workers 0 to 2, scaled by the
   backlog), one worker killed (SIGKILL) while it holds a request once half are answered; then every request must
   have exactly one outcome, a result, and none an error. Throughput is requests answered per second, from the first
   request queued to the last result written.
3. Async, one CSV of 200,000 rows: rows per second from queued to written, against the real-time endpoint's rows
   per second at one row a request.
4. Cold start: the first request to an endpoint whose workers have gone to zero, from queued to its result.

    .venv/bin/python benchmarks/async_inference.py [--requests 1000] [--json]
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

from _kiln import kiln, learnable_frame, registered_workspace
from _report import Figure, parser, run_measured

FEATURES = 20
CONNECTIONS = 8


def deploy(ws: Path, name: str, extra: dict) -> str:
    spec = ws / f"{name}.yaml"
    spec.write_text(json.dumps({"name": name, "variants": [{"name": "main", "model": "models:/bench/1"}],
                                "capture": {"enabled": False}, **extra}))
    return kiln("endpoint", "deploy", spec, ws=ws)["url"]


def outcomes(ws: Path, ids: list[str]) -> dict[str, str]:
    """Each id's outcome so far: done, failed or pending (read from the async store's files)."""
    found = {}
    for i in ids:
        folder = ws / "async" / i
        found[i] = ("done" if (folder / "result.json").exists() else
                    "failed" if (folder / "error.json").exists() else "pending")
    return found


async def submit_all(url: str, bodies: list[bytes], content_type: str) -> tuple[list[str], float]:
    """POST every body, CONNECTIONS at a time; the inference ids in order, and when the first was sent."""
    import httpx

    ids: list[str] = [""] * len(bodies)
    queue = iter(enumerate(bodies))
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=60) as client:
        async def sender() -> None:
            for i, body in queue:
                res = await client.post(url, content=body, headers={"content-type": content_type})
                if res.status_code != 202:
                    raise SystemExit(f"request {i} refused: {res.status_code} {res.text[:300]}")
                ids[i] = res.json()["inference_id"]

        await asyncio.gather(*(sender() for _ in range(CONNECTIONS)))
    return ids, started


def kill_a_busy_worker(ws: Path, endpoint: str) -> int | None:
    """SIGKILL one of the endpoint's workers that holds a request; its pid, or None when none does."""
    import httpx

    for index in range(4):
        try:
            record = json.loads((ws / ".kiln" / "run" / f"endpoint-{endpoint}-worker-{index}.pid").read_text())
            if httpx.get(f"http://127.0.0.1:{record['port']}/health", timeout=2).json().get("busy"):
                os.kill(record["pid"], signal.SIGKILL)
                return int(record["pid"])
        except (OSError, ValueError, httpx.HTTPError):
            continue
    return None


def measure(args):  # -> (figures, notes)
    from kiln.serving.loadtest import load_test

    root = Path(tempfile.mkdtemp(prefix="kiln-bench-async-"))
    frame, features = learnable_frame(5000, FEATURES)
    ws = registered_workspace(root, frame, features, "-f", "lgbm", "--iterations", "50")
    kiln("models", "approve", "bench/1", "--reason", "benchmark", ws=ws)
    rows = frame[features].to_dict("records")
    one = [json.dumps({"instances": [rows[i % len(rows)]]}).encode() for i in range(args.requests)]

    rt = deploy(ws, "rt", {})
    try:
        realtime = load_test(f"{rt}/v1/models/rt:predict", one[0], seconds=10, connections=CONNECTIONS)
    finally:
        kiln("endpoint", "delete", "rt", ws=ws)

    url = deploy(ws, "as", {"mode": "async", "async_inference": {
        "workers": {"min": 0, "max": 2, "backlog_per_worker": 50, "idle_seconds": 5}}}) + "/v1/models/as:predict"
    try:
        ids, started = asyncio.run(submit_all(url, one, "application/json"))
        killed = None
        while True:
            state = outcomes(ws, ids)
            done = sum(1 for s in state.values() if s != "pending")
            if killed is None and done >= len(ids) // 2:
                killed = kill_a_busy_worker(ws, "as")
            if done == len(ids):
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        lost = [i for i, s in state.items() if s != "done"]
        if lost:
            raise SystemExit(f"{len(lost)} requests without a result: {lost[:5]}")
        again = sum(1 for i in ids if (ws / "async" / i / "deliveries").read_text() != "1")

        big = root / "rows.csv"
        import pandas as pd

        many = pd.concat([frame[features]] * (200_000 // len(frame)), ignore_index=True)
        many.to_csv(big, index=False)
        t0 = time.perf_counter()
        [big_id], _ = asyncio.run(submit_all(url, [big.read_bytes()], "text/csv"))
        while not (ws / "async" / big_id / "result.jsonl").exists():
            if (ws / "async" / big_id / "error.json").exists():
                raise SystemExit((ws / "async" / big_id / "error.json").read_text())
            time.sleep(0.05)
        rows_per_second = len(many) / (time.perf_counter() - t0)

        cold = []
        for _ in range(3):  # workers back to zero, then one request
            while kiln("endpoint", "status", "as", ws=ws)["live"].get("workers"):
                time.sleep(0.5)
            t0 = time.perf_counter()
            [cid], _ = asyncio.run(submit_all(url, [one[0]], "application/json"))
            while not (ws / "async" / cid / "result.json").exists():
                time.sleep(0.02)
            cold.append(time.perf_counter() - t0)
    finally:
        kiln("endpoint", "delete", "as", ws=ws)

    figures = [
        Figure("async: 1-row requests answered/s", len(ids) / elapsed, "/s", realtime.requests_per_second,
               "real-time endpoint, requests/s"),
        Figure("async: CSV rows scored/s", rows_per_second, "/s", realtime.requests_per_second,
               "real-time endpoint, rows/s (1 a request)"),
        Figure("async: cold start to result", statistics.median(cold), "s", 5.0, "goal", "at most 5 s"),
    ]
    notes = {"requests": len(ids), "answered once each": len(ids) - len(lost),
             "worker killed while it held a request": killed or "none was caught busy",
             "requests delivered more than once": again, "CSV rows": len(many),
             "real-time p99 (ms)": realtime.p99_ms, "cold starts (s)": [round(c, 2) for c in cold]}
    return figures, notes


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=1000)
    run_measured("async inference", measure, p.parse_args())
