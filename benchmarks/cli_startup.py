"""How fast light `kiln` commands answer: DESIGN.md asks for well under a second.

Run: .venv/bin/python benchmarks/cli_startup.py [--runs N] [--json]
Reference: the one-second budget; the bare interpreter start is printed as the floor.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from _report import Figure, parser, report

KILN = Path(sys.executable).parent / "kiln"
BUDGET_S = 1.0


def median_seconds(cmd: list[str], runs: int) -> float:
    subprocess.run(cmd, capture_output=True, check=True)  # warm the file cache
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10)
    args = p.parse_args()
    floor = median_seconds([sys.executable, "-c", "pass"], args.runs)
    figures = [
        Figure(f"kiln {' '.join(cmd)}", median_seconds([str(KILN), *cmd], args.runs), "s", BUDGET_S,
               "the 1 s budget", "ratio < 1")
        for cmd in (["--version"], ["--help"], ["data", "--help"], ["data", "generate", "--help"])
    ]
    report("CLI start-up (median wall time)", figures, args.json,
           {"runs": args.runs, "bare python start (s)": round(floor, 3)})


if __name__ == "__main__":
    main()
