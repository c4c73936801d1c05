"""Endpoint throughput and latency: the Kiln endpoint against bare KServe serving the same model.

One small LightGBM model is registered in a fresh workspace. The reference is `kserve.ModelServer` serving it
alone; the figure is a Kiln endpoint serving it with two production variants (90/10), a 10% shadow and data
capture on, all on the same machine. Load comes from wrk (Debian package `wrk`) on loopback: a fixed number of
connections, each sending the next request as soon as the last is answered.

Goal: throughput at least 0.9 of bare KServe, p99 at most 1.25 of it.

    .venv/bin/python benchmarks/endpoint_throughput.py [--seconds 20] [--connections 16] [--json]
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _kiln import KILN, kiln, registered_workspace
from _report import Figure, parser, run_measured

ROW = {"calls": 5, "tenure": 40.0, "plan": "basic"}


def workspace(root: Path) -> Path:
    """A workspace with model `bench` registered (version 1): LightGBM on a learnable synthetic table."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 2000
    calls, tenure = rng.poisson(2, n), rng.uniform(0, 1000, n)
    plan = rng.choice(["basic", "plus", "pro"], n)
    logit = 0.9 * calls - tenure / 300 + (plan == "basic") * 0.8 - 0.5
    frame = pd.DataFrame({"customer_id": np.arange(n), "label_timestamp": pd.Timestamp("2026-01-01", tz="UTC"),
                          "calls": calls, "tenure": tenure, "plan": plan,
                          "churned": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")})
    return registered_workspace(root, frame, ["calls", "tenure", "plan"], "-f", "lgbm", "--iterations", "5")


def wait_ready(url: str, seconds: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    sys.exit(f"{url} did not become ready")


def wrk(url: str, seconds: int, connections: int, folder: Path) -> dict[str, float]:
    """wrk's requests/s and latency percentiles for POSTing one V1 instance to ``url``."""
    script = folder / "post.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = '{json.dumps({'instances': [ROW]})}'\n")
    subprocess.run(["wrk", "-t1", "-c", str(connections), "-d", "3s", "-s", str(script), url],
                   capture_output=True, check=True)  # warm-up: connections, caches, lazy imports
    res = subprocess.run(["wrk", "-t1", "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s",
                          str(script), url], capture_output=True, text=True, check=True)
    text = res.stdout
    unit = {"us": 0.001, "ms": 1.0, "s": 1000.0}

    def pct(p: str) -> float:
        m = re.search(rf"^\s*{p}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        return float(m.group(1)) * unit[m.group(2)]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)), "p50": pct("50"),
            "p99": pct("99"), "non_2xx": int(errors.group(1)) if errors else 0}


def measure(args) -> tuple[list[Figure], dict]:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: `apt-get install wrk` (Debian package) and run again")
    root = Path(tempfile.mkdtemp(prefix="kiln-bench-endpoint-"))
    procs: list[subprocess.Popen] = []
    ws = None
    try:
        print("… training and registering the model", file=sys.stderr)
        ws = workspace(root)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{ws}/models/mlflow.db"}
        port = 18431
        log = (root / "bare.log").open("w")
        procs.append(subprocess.Popen([sys.executable, "-m", "kiln.serving.server", "--name", "bench", "--model-uri",
                                       "models:/bench/1", "--http-port", str(port)], env=env, stdout=log,
                                      stderr=log))
        wait_ready(f"http://127.0.0.1:{port}/v2/models/bench/ready")
        print(f"… bare KServe: wrk, {args.connections} connections, {args.seconds} s", file=sys.stderr)
        bare = wrk(f"http://127.0.0.1:{port}/v1/models/bench:predict", args.seconds, args.connections, root)
        procs.pop().terminate()

        spec = root / "endpoint.yaml"
        spec.write_text(json.dumps({
            "name": "bench",
            "variants": [{"name": "blue", "model": "models:/bench/1", "weight": 9},
                         {"name": "green", "model": "models:/bench/1", "weight": 1}],
            "shadow": {"name": "shadow", "model": "models:/bench/1", "sample_percent": 10},
            "capture": {"enabled": True, "sample_percent": 100},
        }))
        kiln("models", "approve", "bench/1", "--reason", "the benchmark's model", ws=ws)  # production serves approved
        print("… deploying the Kiln endpoint (2 variants 90/10, 10% shadow, capture)", file=sys.stderr)
        url = kiln("endpoint", "deploy", spec, ws=ws)["url"]
        print(f"… Kiln endpoint: wrk, {args.connections} connections, {args.seconds} s", file=sys.stderr)
        endpoint = wrk(f"{url}/v1/models/bench:predict", args.seconds, args.connections, root)
        status = kiln("endpoint", "status", "bench", ws=ws)
        captured = sum(1 for f in (ws / "capture").rglob("*.jsonl") for _ in f.open())
    finally:
        for p in procs:
            p.terminate()
        if ws is not None:
            subprocess.run([str(KILN), "endpoint", "delete", "bench", "-w", str(ws)], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    figures = [
        Figure("throughput", endpoint["rps"], "/s", bare["rps"], "bare KServe", "ratio >= 0.9"),
        Figure("p50 latency", endpoint["p50"], "ms", bare["p50"], "bare KServe"),
        Figure("p99 latency", endpoint["p99"], "ms", bare["p99"], "bare KServe", "ratio <= 1.25"),
    ]
    served = {k: v.get("requests") for k, v in status.get("live", {}).get("variants", {}).items()}
    notes = {"connections": args.connections, "seconds": args.seconds,
             "non-2xx answers (bare, endpoint)": f"{bare['non_2xx']}, {endpoint['non_2xx']}",
             "requests per variant (last minute)": served, "capture records written": captured}
    return figures, notes


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=20)
    p.add_argument("--connections", type=int, default=16)
    run_measured("Endpoint throughput (Kiln endpoint vs bare KServe)", measure, p.parse_args())
