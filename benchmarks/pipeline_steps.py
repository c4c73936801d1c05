"""Local pipeline runs: each step forked from the warm step server, against each step started as a new process.

Run: .venv/bin/python benchmarks/pipeline_steps.py [--customers N] [--days D] [--json]
Reference: the same churn_training run (validate, ingest, training set, a 1-trial tuning job, evaluate; the gate set
out of reach so nothing after it runs) on the same data in the same process, with kfp's own SubprocessRunner
starting every step as a new Python process. Goal: the steps other than tuning take at most half their time.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _kiln import churn_workspace, step_times
from _report import Figure, parser, run_measured

GOAL = "ratio <= 0.5"
_T0 = time.perf_counter()


def log(message: str) -> None:
    print(f"[pipeline_steps {time.perf_counter() - _T0:5.1f}s] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def cold_steps() -> Iterator[None]:
    """Every step a new process, as kfp.local runs them on its own."""
    yield


def run_once(root: Path, customers: int, days: int, warm: bool) -> dict[str, float]:
    from kiln.workflow import local_run
    from kiln.workflow.catalog import load_pipeline

    ws, data = churn_workspace(root / ("warm" if warm else "cold") / "ws", customers, days)
    original = local_run.warm_steps
    if not warm:
        local_run.warm_steps = cold_steps  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        run = local_run.run_local(ws, load_pipeline("churn_training"),
                                  {"data": str(data), "trials": 1, "max_iterations": 3, "min_auc": 0.999}, log)
        total = time.perf_counter() - t0
    finally:
        local_run.warm_steps = original
    return step_times(run, total)


def measure(args: Any) -> tuple[list[Figure], dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="kiln-bench-steps-") as tmp:
        log("cold: every step a new process")
        cold = run_once(Path(tmp), args.customers, args.days, warm=False)
        log("warm: every step a fork of the step server")
        warm = run_once(Path(tmp), args.customers, args.days, warm=True)
    figures = [Figure(f"{name} (s)", warm[name], "s", cold[name], "a new process per step")
               for name in cold if name in warm]
    others = [n for n in cold if n not in ("tune-model", "whole run") and n in warm]
    figures.append(Figure("steps but tuning (s)", sum(warm[n] for n in others), "s", sum(cold[n] for n in others),
                          "a new process per step", GOAL))
    return figures, {"customers": args.customers, "days": args.days, "steps": ", ".join(cold)}


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--customers", type=int, default=400)
    p.add_argument("--days", type=int, default=60)
    run_measured("Local pipeline steps: warm step server against a new process per step", measure, p.parse_args())
