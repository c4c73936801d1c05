"""Scale to zero: the first request to a variant whose server has stopped (min_replicas 0), from sent to answered,
against a request to the same variant awake. The model: LightGBM, 50 trees on 20 features (the size of the main
job's churn model), one row a request.

    .venv/bin/python benchmarks/scale_to_zero.py [--starts 3] [--json]
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from _kiln import kiln, learnable_frame, registered_workspace
from _report import Figure, parser, run_measured

IDLE_SECONDS = 2


def measure(args):  # -> (figures, notes)
    import httpx

    root = Path(tempfile.mkdtemp(prefix="kiln-bench-zero-"))
    frame, features = learnable_frame(5000, 20)
    ws = registered_workspace(root, frame, features, "-f", "lgbm", "--iterations", "50")
    kiln("models", "approve", "bench/1", "--reason", "benchmark", ws=ws)
    spec = ws / "zero.yaml"
    spec.write_text(json.dumps({"name": "zero", "capture": {"enabled": False}, "variants": [
        {"name": "main", "model": "models:/bench/1", "min_replicas": 0, "idle_seconds": IDLE_SECONDS}]}))
    url = kiln("endpoint", "deploy", spec, ws=ws)["url"]
    body = {"instances": [frame[features].iloc[0].to_dict()]}
    cold, warm = [], []
    try:
        with httpx.Client(timeout=120) as client:
            for _ in range(args.starts):
                while client.get(f"{url}/kiln/status").json()["sleepers"]["main"]["awake"]:
                    time.sleep(0.2)
                time.sleep(1.0)  # the stop under way finishes
                t0 = time.perf_counter()
                res = client.post(f"{url}/v1/models/zero:predict", json=body)
                cold.append(time.perf_counter() - t0)
                if res.status_code != 200:
                    raise SystemExit(f"cold request answered {res.status_code}: {res.text[:300]}")
                for _ in range(20):
                    t0 = time.perf_counter()
                    client.post(f"{url}/v1/models/zero:predict", json=body)
                    warm.append(time.perf_counter() - t0)
            starts = client.get(f"{url}/kiln/status").json()["sleepers"]["main"]
    finally:
        kiln("endpoint", "delete", "zero", ws=ws)
    figures = [Figure("cold start: request to answer", statistics.median(cold), "s", 5.0, "goal", "at most 5 s"),
               Figure("cold start over a warm request", statistics.median(cold), "s", statistics.median(warm),
                      "the same request, variant awake")]
    notes = {"cold starts (s)": [round(c, 2) for c in cold], "server starts the front timed (s)":
             starts["last_wake_seconds"], "warm request median (ms)": round(statistics.median(warm) * 1000, 2)}
    return figures, notes


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--starts", type=int, default=3)
    run_measured("scale to zero", measure, p.parse_args())
