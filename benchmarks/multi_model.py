"""A multi-model endpoint with 100 registered versions behind it in a 2 GB budget (LightGBM, 50 trees on 20
features each; one row a request): the first request to each version (a cold load: the front has the server load it,
then sends it), then warm requests to versions drawn at random among the loaded ones; p50 and p99 of both, against
a real-time endpoint's one version.

    .venv/bin/python benchmarks/multi_model.py [--versions 100] [--budget-mb 2048] [--json]
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from _kiln import kiln, learnable_frame, registered_workspace
from _report import Figure, parser, run_measured


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def measure(args):  # -> (figures, notes)
    import httpx

    from kiln.registry.versions import APPROVED, set_approval
    from kiln.workspace import open_workspace

    root = Path(tempfile.mkdtemp(prefix="kiln-bench-multi-"))
    frame, features = learnable_frame(5000, 20)
    ws_root = registered_workspace(root, frame, features, "-f", "lgbm", "--iterations", "50")
    run_id = kiln("models", "show", "bench/1", ws=ws_root)["run_id"]
    ws = open_workspace(ws_root)
    for _ in range(args.versions - 1):
        kiln("models", "register", run_id, "--name", "bench", ws=ws_root)
    for v in range(1, args.versions + 1):
        set_approval(ws, f"bench/{v}", APPROVED, "benchmark", "benchmark")
    spec = ws_root / "many.yaml"
    spec.write_text(json.dumps({"name": "many", "mode": "multi-model", "capture": {"enabled": False},
                                "variants": [{"name": "main", "model": "models:/bench/1"}],
                                "multi_model": {"budget_mb": args.budget_mb}}))
    url = kiln("endpoint", "deploy", spec, ws=ws_root)["url"] + "/v1/models/many:predict"
    body = {"instances": [frame[features].iloc[0].to_dict()]}
    cold, warm = [], []
    try:
        with httpx.Client(timeout=120) as client:
            for v in range(1, args.versions + 1):
                t0 = time.perf_counter()
                res = client.post(url, json=body, headers={"x-kiln-target-model": f"bench/{v}"})
                cold.append(time.perf_counter() - t0)
                if res.status_code != 200:
                    raise SystemExit(f"version {v}: {res.status_code} {res.text[:300]}")
            status = client.get(url.split("/v1/")[0] + "/kiln/status").json()
            rng = random.Random(0)
            recent = list(range(max(1, args.versions - 20), args.versions + 1))  # the newest, surely loaded
            for _ in range(1000):
                t0 = time.perf_counter()
                client.post(url, json=body, headers={"x-kiln-target-model": f"bench/{rng.choice(recent)}"})
                warm.append(time.perf_counter() - t0)
        server = json.loads((ws_root / ".kiln" / "run" / "endpoint-many-main.pid").read_text())
        import psutil

        resident = psutil.Process(server["pid"]).memory_info().rss / 2**20
    finally:
        kiln("endpoint", "delete", "many", ws=ws_root)
    figures = [
        Figure("cold load: request p99", p99(cold) * 1000, "ms", p99(warm) * 1000, "warm request p99"),
        Figure("cold load: request p50", statistics.median(cold) * 1000, "ms", statistics.median(warm) * 1000,
               "warm request p50"),
        Figure("server resident memory", resident, "MB", args.budget_mb, "budget"),
    ]
    notes = {"versions": args.versions, "warm requests": len(warm),
             "requests the front counted in its last minute": status.get("variants", {}).get("main", {}).get("requests")}
    return figures, notes


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--versions", type=int, default=100)
    p.add_argument("--budget-mb", type=float, default=2048.0)
    run_measured("multi-model endpoint", measure, p.parse_args())
