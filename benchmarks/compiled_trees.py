"""Compiled trees: a LightGBM model compiled by Kiln (trees to tensor operations, TVM) against LightGBM's own
predict, one thread each.

A LightGBM model (20 numeric inputs, 100 boosting rounds of up to 31 leaves) is trained and registered in a fresh
workspace and compiled for this machine's x86_64 CPU with TVM's default schedules, and with `--tune` when asked.
Each predictor takes the same float32 rows and answers the positive class's probability:

- the compiled artifact, called as the edge agent and `kiln compile`'s parity check call it;
- LightGBM's `Booster.predict` on the same model file (`num_threads=1`);
- ONNX Runtime on the graph the compiler took (one intra-op thread), for reference.

Latency is the median of many calls at batch 1 and batch 256. Goal: the compiled artifact not slower than
LightGBM at batch 1 (ratio at most 1.0) and at most 0.5 of its time at batch 256.

    .venv/bin/python benchmarks/compiled_trees.py [--tune --trials 300] [--json]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from _kiln import kiln, learnable_frame, registered_workspace
from _report import Figure, parser, run_measured
from compiled_latency import compiled_model, latency_us, ort_predict  # sets one thread everywhere before numpy starts

WIDTH, ROUNDS = 20, 100
GOAL_B1, GOAL_B256 = 1.0, 0.5


def workspace(root: Path) -> Path:
    """A workspace with LightGBM registered as `bench` version 1, trained on a learnable synthetic table."""
    frame, features = learnable_frame(20_000, WIDTH)
    return registered_workspace(root, frame, features, "-f", "lgbm", "--iterations", str(ROUNDS // 10),
                                "--no-debugger")


def measure(args) -> tuple[list[Figure], dict]:
    import lightgbm as lgb
    import numpy as np

    from kiln.compile.source import export_graph

    root = Path(tempfile.mkdtemp(prefix="kiln-bench-trees-"))
    try:
        print("… training and registering LightGBM", file=sys.stderr)
        ws = workspace(root)
        print("… compiling with TVM's default schedules", file=sys.stderr)
        compiled = {"default": kiln("compile", "bench/1", "--target", "x86_64", ws=ws)}
        if args.tune:
            print(f"… compiling with --tune ({args.trials} trials)", file=sys.stderr)
            compiled["tuned"] = kiln("compile", "bench/1", "--target", "x86_64", "--tune", "--trials", args.trials,
                                     ws=ws)
        model_file = next((ws / "models").rglob("model.lgbm.txt"))
        booster = lgb.Booster(model_file=str(model_file))
        trees = booster.num_trees()
        graph = export_graph("lgbm", model_file, WIDTH)
        predictors = {key: compiled_model(Path(doc["path"])).predict for key, doc in compiled.items()}
        predictors["lightgbm"] = lambda x: booster.predict(x, num_threads=1)
        predictors["ort"] = ort_predict(graph)
        x = np.random.default_rng(1).normal(size=(256, WIDTH)).astype(np.float32)
        reference = booster.predict(x, num_threads=1)
        agreement = {k: float(np.abs(np.asarray(p(x)).reshape(len(x), -1)[:, -1] - reference).max())
                     for k, p in predictors.items() if k != "lightgbm"}
        lat = {}
        for batch in (1, 256):
            rows = np.ascontiguousarray(x[:batch])
            for key, predict in predictors.items():
                print(f"… timing {key} at batch {batch}", file=sys.stderr)
                lat[key, batch] = latency_us(predict, rows, args.seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    best = "tuned" if args.tune else "default"
    figures = [
        Figure(f"{best} TVM, batch 1", lat[best, 1], "us", lat["lightgbm", 1], "LightGBM predict", f"ratio <= {GOAL_B1}"),
        Figure(f"{best} TVM, batch 256", lat[best, 256], "us", lat["lightgbm", 256], "LightGBM predict",
               f"ratio <= {GOAL_B256}"),
        Figure("ONNX Runtime, batch 1", lat["ort", 1], "us", lat["lightgbm", 1], "LightGBM predict"),
        Figure("ONNX Runtime, batch 256", lat["ort", 256], "us", lat["lightgbm", 256], "LightGBM predict"),
    ]
    if args.tune:
        figures += [Figure(f"default TVM, batch {b}", lat["default", b], "us", lat["lightgbm", b], "LightGBM predict")
                    for b in (1, 256)]
    notes = {
        "model": f"LightGBM, {trees} trees, {WIDTH} float32 inputs, one thread each",
        "max |diff| against LightGBM": ", ".join(f"{k} {v:.1e}" for k, v in agreement.items()),
    }
    return figures, notes


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--tune", action="store_true", help="also compile with MetaSchedule tuning")
    p.add_argument("--trials", type=int, default=300, help="MetaSchedule trials with --tune")
    p.add_argument("--seconds", type=float, default=2.0, help="timing per predictor and batch size")
    run_measured("compiled trees against LightGBM", measure, p.parse_args())


if __name__ == "__main__":
    main()
