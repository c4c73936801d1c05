"""Monitor run time over 100k and 1M captured rows of 20 features, and how it grows.

A LightGBM model on 20 features (17 numbers, 3 categories) is registered in a fresh workspace; capture files
in the endpoint capture format are written with N production requests (one row each, the second half with
two features drifted), and ground-truth labels for every request. The figure is one whole `kiln monitor run`
(baseline made beforehand): reading the capture, data-quality constraints on every row, Evidently drift on
a sample of at most monitoring.drift_sample_rows (100,000) rows, Evidently classification metrics on the
labelled rows, the SHAP ranking of 200 rows, the HTML, JSON and Prometheus outputs and the Evidently snapshots.
Bias drift is not part of it (the benchmark's table has no feature service to look facets up in).

Goal: 1M rows in at most 60 s on 2 cores.

    .venv/bin/python benchmarks/monitor_run.py [--sizes 100000,1000000] [--json]
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from _kiln import registered_workspace
from _report import Figure, parser, run_measured

NUMERIC = [f"n{i:02d}" for i in range(17)]
CATEGORIES = {"contract": ["month-to-month", "one-year", "two-year"], "plan": ["basic", "standard", "premium"],
              "payment": ["card", "bank", "check", "cash"]}
FEATURES = NUMERIC + list(CATEGORIES)
DRIFTED = ["n00", "n01"]
GOAL_SECONDS = 60.0


def table(n: int, seed: int, shift_from: int | None = None):  # a pandas frame
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    data = {f: rng.normal(10 + i, 1 + i / 4, n).round(4) for i, f in enumerate(NUMERIC)}
    for f, values in CATEGORIES.items():
        data[f] = rng.choice(values, n)
    if shift_from is not None:
        for f in DRIFTED:
            data[f][shift_from:] += 1.5 * (1 + NUMERIC.index(f) / 4)
    frame = pd.DataFrame(data)
    logit = (frame["n00"] - 10) + 0.5 * (frame["n01"] - 11) - 0.8 * (frame["contract"] == "two-year") - 1.2
    frame["churned"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


def write_capture(root: Path, n: int) -> None:
    """N records as the capture writer stores them, ten files an hour apart; the second half drifted."""
    import orjson

    frame = table(n, seed=1, shift_from=n // 2)
    rows = frame[FEATURES].to_dict("records")
    labels = frame["churned"].to_numpy()
    per_file = -(-n // 10)
    for part in range(10):
        folder = root / "endpoint=bench" / f"hour=2026-11-20T{part:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "capture-1.jsonl").open("wb") as f:
            for i in range(part * per_file, min(n, (part + 1) * per_file)):
                p = 0.8 if labels[i] else 0.2
                f.write(orjson.dumps({
                    "inference_id": f"b{i:07d}", "timestamp": f"2026-11-20T{part:02d}:00:00.{i % 999999:06d}+00:00",
                    "endpoint": "bench", "variant": "primary", "shadow": False, "request": {"instances": [rows[i]]},
                    "response": {"predictions": [{"probability": p, "prediction": int(p >= 0.5)}]}, "status": 200,
                    "latency_ms": 2.0}) + b"\n")
    labels_file = root / "labels.parquet"
    import pandas as pd

    pd.DataFrame({"inference_id": [f"b{i:07d}" for i in range(n)], "label": labels}).to_parquet(labels_file)


def measure(args) -> tuple[list[Figure], dict]:
    import pandas as pd

    from kiln.monitoring.baseline import create_baseline
    from kiln.monitoring.labels import ingest_labels
    from kiln.monitoring.run import run_monitor
    from kiln.workspace import open_workspace

    sizes = [int(s) for s in args.sizes.split(",")]
    root = Path(tempfile.mkdtemp(prefix="kiln-bench-monitor-"))
    seconds, notes = {}, {}
    try:
        train = table(5000, seed=0)
        train.insert(0, "customer_id", range(len(train)))
        train.insert(1, "label_timestamp", pd.Timestamp("2026-11-01", tz="UTC"))
        ws_root = registered_workspace(root, train, FEATURES, "-f", "lgbm", "--iterations", "10")
        ws = open_workspace(ws_root)
        create_baseline(ws, "bench/1")
        for n in sizes:
            capture = root / f"capture-{n}"
            t0 = time.perf_counter()
            write_capture(capture, n)
            shutil.rmtree(ws.folder("monitoring") / "labels", ignore_errors=True)
            ingest_labels(ws, "bench", capture / "labels.parquet")
            notes[f"{n:,} rows: writing capture and labels (s)"] = round(time.perf_counter() - t0, 1)
            t0 = time.perf_counter()
            result = run_monitor(ws, "bench", model="bench/1", capture=capture)
            seconds[n] = time.perf_counter() - t0
            drift = result.monitors.data_drift
            notes[f"{n:,} rows: read (s)"] = result.read_seconds
            notes[f"{n:,} rows: drifted"] = ", ".join(drift.drifted) or "none"
            notes[f"{n:,} rows: drift measured on"] = drift.note or f"all {drift.rows:,} rows"
            notes[f"{n:,} rows: violations"] = len(result.violations)
            assert set(DRIFTED) <= set(drift.drifted), f"the drift on {DRIFTED} was missed at {n} rows"
            shutil.rmtree(capture)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    figures = [Figure(f"monitor run, {n:,} rows", s, "s", GOAL_SECONDS, "the goal, 60 s", "ratio <= 1")
               for n, s in seconds.items()]
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        figures.append(Figure(f"growth {small:,} -> {large:,} rows", seconds[large] / seconds[small], "x",
                              large / small, "linear growth"))
    return figures, notes


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default="100000,1000000", help="captured rows per run, comma-separated")
    run_measured("Monitor run time (kiln monitor run over the capture store)", measure, p.parse_args())
