"""The `kiln` CLI as benchmarks drive it: a fresh workspace, and a model trained and registered in it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

KILN = Path(sys.executable).parent / "kiln"


def kiln(*args: object, ws: Path) -> dict:
    """`kiln ARGS -w WS --json`, parsed; a failure ends the benchmark with kiln's own error."""
    res = subprocess.run([str(KILN), *map(str, args), "-w", str(ws), "--json"], capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"kiln {' '.join(map(str, args))} failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout)


def learnable_frame(rows: int, width: int) -> tuple["pd.DataFrame", list[str]]:
    """A training table (customer_id, label_timestamp, ``width`` normal features f00.., churned) whose label follows
    a few features, one through a sine; and the feature names."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, width))
    logit = x[:, :5] @ np.array([1.0, -0.8, 0.6, 0.4, -0.3]) + 0.5 * np.sin(x[:, 5] * 2)
    features = [f"f{i:02d}" for i in range(width)]
    frame = pd.DataFrame(x, columns=features)
    frame.insert(0, "customer_id", np.arange(rows))
    frame.insert(1, "label_timestamp", pd.Timestamp("2026-01-01", tz="UTC"))
    frame["churned"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("int64")
    return frame, features


def registered_workspace(root: Path, frame: "pd.DataFrame", features: list[str], *train_args: object) -> Path:
    """A new workspace ROOT/ws with ``frame`` (customer_id, label_timestamp, features, churned) as its training
    set, a model trained on it with ``train_args`` (family, parameters) and registered as `bench` version 1."""
    ws = root / "ws"
    subprocess.run([str(KILN), "init", str(ws)], check=True, capture_output=True)
    path = ws / "train.parquet"
    frame.to_parquet(path, index=False)
    path.with_name(path.name + ".json").write_text(json.dumps(
        {"features": features, "label": "churned", "lineage": {"dataset": "bench"}}))
    run = kiln("train", "-t", path, *train_args, ws=ws)["run_id"]
    kiln("models", "register", run, "--name", "bench", ws=ws)
    return ws


def churn_workspace(root: Path, customers: int, days: int, seed: int = 3) -> tuple[Any, Path]:
    """A new workspace at ROOT with a generated churn dataset in data/churn; the workspace and the dataset's folder."""
    from datetime import date

    from kiln.data.dataset import staged_dataset, write_dataset
    from kiln.data.generate import GenerateOptions, generate_churn
    from kiln.data.schema import CHURN_SCHEMA
    from kiln.workspace import init_workspace

    ws = init_workspace(root).workspace
    data = ws.root / "data" / "churn"
    with staged_dataset(data, overwrite=False) as stage:
        frames, stats = generate_churn(GenerateOptions(customers=customers, days=days, seed=seed,
                                                       end=date(2026, 10, 1)))
        write_dataset(stage, "churn", CHURN_SCHEMA, frames, {"seed": seed}, stats)
    return ws, data


def step_times(run: Any, total: float) -> dict[str, float]:
    """Each task's seconds of a local pipeline run, and the whole run's as "whole run"."""
    times = {task.name: task.seconds for task in run.tasks}
    times["whole run"] = total
    return times

