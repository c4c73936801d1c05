"""The Debugger report's PNG plots, drawn from its findings document.

Also a script (``python plots.py FOLDER``, reading FOLDER/findings.json): the report starts it beside the rest of a
run's logging, so the plotting library's import and drawing take no time from the training's process. It imports
nothing of Kiln's for the same reason.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

LOSSES_PNG, PROFILE_PNG = "losses.png", "profile.png"


def loss_plot(doc: dict[str, Any], out: Path) -> Path:
    """Training and validation loss by step, each finding marked at its step (red: the one that stopped it)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4))
    ax = fig.add_axes((0.09, 0.13, 0.88, 0.78))
    steps = [p["step"] for p in doc["losses"]]
    loss = doc["loss"]
    ax.plot(steps, [p["train"] for p in doc["losses"]], marker=".", label=f"training {loss}")
    ax.plot(steps, [p["valid"] for p in doc["losses"]], marker=".", label=f"validation {loss}")
    at_step: dict[int, int] = {}
    for f in doc["findings"]:
        stopped = doc["stopped_by"] == f["rule"] and doc["stopped_at"] == f["step"]
        color = "tab:red" if stopped else "tab:gray"
        height = 0.98 - 0.3 * at_step.get(f["step"], 0)  # findings of one step are stacked down the line
        at_step[f["step"]] = at_step.get(f["step"], 0) + 1
        ax.axvline(f["step"], color=color, linestyle="--", linewidth=1)
        ax.annotate(f"{f['rule']} ({f['action']})", (f["step"], height), xycoords=("data", "axes fraction"),
                    rotation=90, va="top", ha="right", fontsize=8, color=color)
    ax.set_xlabel("step")
    ax.set_ylabel(loss)
    ax.grid(alpha=0.3)
    ax.legend(loc="center right", fontsize=8)
    ax.set_title(f"{doc['family']}: losses and Debugger findings")
    fig.savefig(out, dpi=100)
    return out


def profile_plot(doc: dict[str, Any], out: Path) -> Path:
    """CPU percent and resident memory over the training's seconds."""
    from matplotlib.figure import Figure

    samples = doc["profile_samples"]  # [seconds, cpu %, rss MB]
    fig = Figure(figsize=(8, 4.5))
    cpu_ax = fig.add_axes((0.09, 0.55, 0.88, 0.37))
    rss_ax = fig.add_axes((0.09, 0.11, 0.88, 0.37), sharex=cpu_ax)
    cpu_ax.plot([s[0] for s in samples[1:]], [s[1] for s in samples[1:]], color="tab:blue", marker=".")
    rss_ax.plot([s[0] for s in samples], [s[2] for s in samples], color="tab:green", marker=".")
    cpu_ax.set_ylabel("CPU %")
    rss_ax.set_ylabel("RSS MB")
    rss_ax.set_xlabel("seconds since training started")
    for ax in (cpu_ax, rss_ax):
        ax.grid(alpha=0.3)
    interval = (doc.get("profile") or {}).get("interval")
    cpu_ax.set_title("process profile" + (f" (a sample every {interval:g} s)" if interval else " (not profiled)"))
    fig.savefig(out, dpi=100)
    return out


def draw(folder: Path) -> None:
    """Both plots of FOLDER/findings.json, into FOLDER."""
    doc = json.loads((folder / "findings.json").read_text())
    loss_plot(doc, folder / LOSSES_PNG)
    profile_plot(doc, folder / PROFILE_PNG)


if __name__ == "__main__":
    draw(Path(sys.argv[1]))
