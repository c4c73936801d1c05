"""Compiled model latency: Kiln's TVM artifact against ONNX Runtime and the native framework, one thread.

One MLP (scikit-learn, 20 inputs, two hidden layers of 128) is trained and registered in a fresh workspace,
then compiled for this machine's x86_64 CPU three times: with TVM's default schedules, with `--tune`
(MetaSchedule), and with `--tune` again (the records are reused: nothing is tuned). Each predictor takes the
same encoded float32 rows and returns the two class probabilities:

- the compiled artifact, called as the edge agent and `kiln compile`'s parity check call it;
- ONNX Runtime on the version's ONNX graph (one intra-op thread);
- scikit-learn's own `MLPClassifier.predict_proba` with the same weights and the same standardization.

Latency is the median of many calls at batch 1 and batch 256. Goal: the tuned artifact at most 0.8x ONNX
Runtime's latency at both batch sizes, and at most 0.5x scikit-learn's (at least 2x faster).

    .venv/bin/python benchmarks/compiled_latency.py [--trials 600] [--json]
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TVM_NUM_THREADS"):
    os.environ[_name] = "1"  # one thread everywhere, set before numpy, scikit-learn or TVM start their pools

import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from _kiln import kiln, learnable_frame, registered_workspace  # noqa: E402
from _report import Figure, parser, run_measured  # noqa: E402

WIDTH, HIDDEN = 20, 128
GOAL_ORT, GOAL_NATIVE = 0.8, 0.5


def workspace(root: Path) -> Path:
    """A workspace with the MLP registered as `bench` version 1, trained on a learnable synthetic table."""
    frame, features = learnable_frame(4000, WIDTH)
    return registered_workspace(root, frame, features, "-f", "mlp", "-p", f"width={HIDDEN}", "-p", "layers=2",
                                "--iterations", "5")


def native_mlp(graph) -> tuple:  # an onnx.ModelProto
    """scikit-learn's MLPClassifier holding the graph's weights, and the standardization in front of it."""
    import numpy as np
    from onnx import numpy_helper
    from sklearn.neural_network import MLPClassifier

    weights = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in graph.graph.initializer}
    layers = sum(1 for name in weights if name.startswith("w"))
    clf = MLPClassifier(hidden_layer_sizes=tuple(weights[f"w{i}"].shape[1] for i in range(layers - 1)))
    clf.partial_fit(np.zeros((2, weights["w0"].shape[0])), [0, 1], classes=[0, 1])  # sets up the layers
    clf.coefs_ = [weights[f"w{i}"] for i in range(layers)]
    clf.intercepts_ = [weights[f"b{i}"] for i in range(layers)]
    return clf, weights["mean"], weights["scale"]


def latency_us(predict, x, seconds: float = 2.0) -> float:  # a callable on float32 rows
    """Median microseconds per call, after a warm-up."""
    import statistics

    for _ in range(20):
        predict(x)
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        predict(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def compiled_model(bundle: Path):  # kiln.compile.runner.CompiledModel
    from kiln.compile.runner import CompiledModel

    manifest = json.loads((bundle / "manifest.json").read_text())
    return CompiledModel({int(b): bundle / name for b, name in manifest["libraries"].items()})


def ort_predict(graph):  # an onnx.ModelProto -> a callable on float32 rows
    """ONNX Runtime on ``graph`` with one intra-op and one inter-op thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def measure(args) -> tuple[list[Figure], dict]:
    import numpy as np
    import onnx

    root = Path(tempfile.mkdtemp(prefix="kiln-bench-compile-"))
    try:
        print("… training and registering the MLP", file=sys.stderr)
        ws = workspace(root)
        print("… compiling with TVM's default schedules", file=sys.stderr)
        default = kiln("compile", "bench/1", "--target", "x86_64", ws=ws)
        print(f"… compiling with --tune ({args.trials} trials)", file=sys.stderr)
        tuned = kiln("compile", "bench/1", "--target", "x86_64", "--tune", "--trials", args.trials, ws=ws)
        print("… compiling with --tune again (the records are reused)", file=sys.stderr)
        again = kiln("compile", "bench/1", "--target", "x86_64", "--tune", "--trials", args.trials, ws=ws)

        graph = onnx.load(str(next((ws / "models").rglob("model.onnx"))))
        clf, mean, scale = native_mlp(graph)
        predictors = {
            "tuned": compiled_model(Path(tuned["path"])).predict,
            "default": compiled_model(Path(default["path"])).predict,
            "ort": ort_predict(graph),
            "native": lambda x: clf.predict_proba((x - mean) / scale),
        }
        x = np.random.default_rng(1).normal(size=(256, WIDTH)).astype(np.float32)
        reference = predictors["ort"](x)
        agreement = {k: float(np.abs(p(x) - reference).max()) for k, p in predictors.items() if k != "ort"}
        lat = {}
        for batch in (1, 256):
            rows = np.ascontiguousarray(x[:batch])
            for key, predict in predictors.items():
                print(f"… timing {key} at batch {batch}", file=sys.stderr)
                lat[key, batch] = latency_us(predict, rows, args.seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    figures = []
    for batch in (1, 256):
        figures += [
            Figure(f"tuned TVM, batch {batch}", lat["tuned", batch], "us", lat["ort", batch], "ONNX Runtime",
                   f"ratio <= {GOAL_ORT}"),
            Figure(f"tuned TVM, batch {batch}", lat["tuned", batch], "us", lat["native", batch], "scikit-learn",
                   f"ratio <= {GOAL_NATIVE}"),
            Figure(f"default TVM, batch {batch}", lat["default", batch], "us", lat["ort", batch], "ONNX Runtime"),
        ]
    figures.append(Figure("recompile, records reused", again["seconds"], "s", tuned["seconds"],
                          "first tuned compile"))
    t = tuned["tuning"]
    notes = {
        "model": f"MLP {WIDTH}-{HIDDEN}-{HIDDEN}-2 (scikit-learn), float32 rows, one thread each",
        "tuning": f"{len(t['tuned'])} kernels, {t['trials']} trials, {t['seconds']} s "
                  f"({len(t['untuned'])} left on the default schedule)",
        "max |diff| against ONNX Runtime": ", ".join(f"{k} {v:.1e}" for k, v in agreement.items()),
        "ONNX Runtime (us)": f"batch 1: {lat['ort', 1]:.1f}, batch 256: {lat['ort', 256]:.1f}",
        "scikit-learn (us)": f"batch 1: {lat['native', 1]:.1f}, batch 256: {lat['native', 256]:.1f}",
    }
    return figures, notes


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=600, help="MetaSchedule trials for the tuned compile")
    p.add_argument("--seconds", type=float, default=2.0, help="timing per predictor and batch size")
    run_measured("compiled model latency", measure, p.parse_args())


if __name__ == "__main__":
    main()
