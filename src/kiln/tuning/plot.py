"""The objective over a tuning job, by trial and by time, as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln.training.metrics import Objective


def objective_plot(trials: list[dict[str, Any]], goal: Objective, title: str, out: Path) -> Path:
    """Each trial's best validation score, and the best so far, against trial order and against elapsed time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = sorted((t for t in trials if t["source"] == "run" and t["valid_score"] is not None),
                 key=lambda t: t["finished_s"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, xkey, xlabel in ((axes[0], None, "trial (in order of finishing)"),
                             (axes[1], "finished_s", "seconds since the job started")):
        xs = [i + 1 for i in range(len(run))] if xkey is None else [t[xkey] for t in run]
        ys = [t["valid_score"] for t in run]
        best: list[float] = []
        for y in ys:
            best.append(y if not best or goal.better(y, best[-1]) else best[-1])
        colors = ["tab:orange" if t["stopped_early"] else "tab:blue" for t in run]
        ax.scatter(xs, ys, c=colors, s=18, label="trial (orange: stopped early)")
        ax.step(xs, best, where="post", color="black", label="best so far")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(goal.label)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
