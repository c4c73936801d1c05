"""Shared output of Kiln's benchmarks: a readable table, or one JSON document with --json.

Every figure is printed with its reference figure and their ratio (figure / reference).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from dataclasses import asdict, dataclass


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    reference: float
    reference_name: str
    goal: str = ""

    @property
    def ratio(self) -> float:
        return self.value / self.reference if self.reference else float("nan")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print one JSON document with every figure")
    return p


def report(title: str, figures: list[Figure], as_json: bool, notes: dict[str, object] | None = None) -> None:
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()}
    if as_json:
        print(json.dumps({"benchmark": title, "machine": machine, "notes": notes or {},
                          "figures": [{**asdict(f), "ratio": round(f.ratio, 4)} for f in figures]}, indent=2))
        return
    print(f"{title}  ({machine['cpus']} cpus, Python {machine['python']})")
    for key, value in (notes or {}).items():
        print(f"  {key}: {value}")
    header = f"{'figure':<34} {'value':>12} {'reference':>12}  {'ratio':>7}  reference is"
    print(header)
    print("-" * len(header))
    for f in figures:
        print(f"{f.name:<34} {f.value:>9.3f} {f.unit:<2} {f.reference:>9.3f} {f.unit:<2}  {f.ratio:>7.3f}  "
              f"{f.reference_name}{'  (goal: ' + f.goal + ')' if f.goal else ''}")


def run_measured(title: str, measure, args) -> None:  # measure(args) -> (figures, notes)
    """Run ``measure`` with the benchmark's own settings only and stdout kept for the report, then report."""
    import contextlib
    import sys
    import time

    for name in [n for n in os.environ if n.upper().startswith("KILN_")]:
        os.environ.pop(name)  # the benchmark's own workspaces, not the machine's settings
    load = os.getloadavg()
    t_start = time.perf_counter()
    # The engines may print; the only stdout of a benchmark is its report.
    with contextlib.redirect_stdout(sys.stderr):
        figures, notes = measure(args)
    notes["cores"] = os.cpu_count()
    notes["load average at start (1/5/15 min)"] = " / ".join(f"{x:.2f}" for x in load)
    notes["wall time (s)"] = round(time.perf_counter() - t_start, 1)
    report(title, figures, args.json, notes)
