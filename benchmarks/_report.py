"""Shared output of Kiln's benchmarks: a readable table, or one JSON document with --json.

Every figure is printed with its reference figure and their ratio (figure / reference).
"""

from __future__ import annotations

import argparse
import json
import platform
import os
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
