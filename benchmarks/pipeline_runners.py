"""Local pipeline runs with every step in a container of the platform image, against every step a process here.

Run: .venv/bin/python benchmarks/pipeline_runners.py [--customers N] [--days D] [--json]
     (a Docker engine must answer and the images be built: `scripts/docker-engine.sh run scripts/images.sh` or
     `make images` then `scripts/docker-engine.sh up`)
Reference: the same churn_training run (validate, ingest, training set, a 2-trial tuning job, evaluate, register,
explain, compile and publish for x86_64; no deploy) on the same data with the subprocess runner (each step a fork of
the warm step server). Goal: the containerized run takes at most twice as long.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _kiln import churn_workspace, step_times
from _report import Figure, parser, run_measured

GOAL = "ratio <= 2"
PARAMS = {"trials": 2, "max_iterations": 3, "targets": ["x86_64"], "deploy": False, "explain_rows": 100}
_T0 = time.perf_counter()


def log(message: str) -> None:
    print(f"[pipeline_runners {time.perf_counter() - _T0:5.1f}s] {message}", file=sys.stderr, flush=True)


def run_once(root: Path, customers: int, days: int, runner: str) -> dict[str, float]:
    from kiln.workflow.catalog import load_pipeline
    from kiln.workflow.local_run import run_local

    ws, data = churn_workspace(root / runner / "ws", customers, days)
    t0 = time.perf_counter()
    run = run_local(ws, load_pipeline("churn_training"), {"data": str(data), **PARAMS}, log, runner)
    total = time.perf_counter() - t0
    return step_times(run, total)


def measure(args: Any) -> tuple[list[Figure], dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="kiln-bench-runners-") as tmp:
        log("subprocess: every step a process here")
        here = run_once(Path(tmp), args.customers, args.days, "subprocess")
        log("docker: every step a container of the platform image")
        boxed = run_once(Path(tmp), args.customers, args.days, "docker")
    figures = [Figure(f"{name} (s)", boxed[name], "s", here[name], "the subprocess runner",
                      GOAL if name == "whole run" else "") for name in here if name in boxed]
    return figures, {"customers": args.customers, "days": args.days, "parameters": PARAMS}


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--customers", type=int, default=2000)
    p.add_argument("--days", type=int, default=60)
    run_measured("Local pipeline runners: containers against processes", measure, p.parse_args())
