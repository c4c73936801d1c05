"""Endpoint throughput and latency per serving runtime, on one model version: `mlflow models serve`, a bare
kserve.ModelServer (Kiln's model server alone), a Kiln endpoint with one variant, and a Kiln endpoint with two
production variants (90/10), a 100% shadow and capture on: with each production variant in its own process, and
inline (`inline: true`: the production variants served in the front's process; the shadow keeps its own).

A LightGBM version (`bench` 1) is served by the mlflow and tvm runtimes (and by `mlflow models serve`); an MLP
version (`bench-mlp` 1) by the onnx runtime, which needs the ONNX graph a tree model does not have. Load comes
from wrk on loopback (kiln.serving.loadtest): one-row V1 requests over a fixed number of connections, each sending
its next request when the last is answered. One runtime is measured at a time, with only its own servers running;
its configurations in turn, in interleaved rounds; the figures are medians over the rounds.

The full endpoint's primary variant's p99 as its front timed it is printed too (with a process per variant): the
part of the endpoint's p99 spent in the variant's server (which shares the 2 cores with the front and wrk), the
rest being the front's.

Goals: per runtime, the full endpoint (inline) serves >= 0.9 of its bare server's throughput with p99 <= 1.25
times; the
tvm runtime >= 1,000 requests/s with p99 under 15 ms and >= 4 times the mlflow runtime; the mlflow runtime >= 2
times `mlflow models serve`.

    .venv/bin/python benchmarks/endpoint_throughput.py [--seconds 10] [--rounds 3] [--connections 8] [--runtimes mlflow tvm onnx]
        [--json]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _kiln import KILN, kiln, learnable_frame, registered_workspace
from _report import Figure, parser, run_measured

RUNTIMES = {"mlflow": "bench", "tvm": "bench", "onnx": "bench-mlp"}
INLINE = "90/10 + shadow + capture, inline"


def wait_ready(url: str, log: Path, seconds: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    sys.exit(f"{url} did not become ready; its log:\n{log.read_text()[-2000:]}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def primary_p99(url: str) -> float:
    """The p99 of variant blue's answers over the last minute as the endpoint's front timed them (the last test's
    requests: tests of one endpoint are minutes apart)."""
    import httpx

    front = url.split("/v1/")[0]
    return float(httpx.get(f"{front}/kiln/status", timeout=10).json()["variants"]["blue"]["p99_ms"])


def measure(args) -> tuple[list[Figure], dict]:
    from kiln.serving.loadtest import load_test, wrk_path

    runtimes = {r: RUNTIMES[r] for r in args.runtimes}

    wrk_path()
    root = Path(tempfile.mkdtemp(prefix="kiln-bench-endpoint-"))
    procs: list[subprocess.Popen] = []
    deployed: list[str] = []
    ws = None
    try:
        print("… training and registering LightGBM and an MLP on 6 features; compiling LightGBM", file=sys.stderr)
        frame, features = learnable_frame(4000, 6)
        ws = registered_workspace(root, frame, features, "-f", "lgbm", "--iterations", "30")
        run = kiln("train", "-t", ws / "train.parquet", "-f", "mlp", "--iterations", "20", ws=ws)["run_id"]
        kiln("models", "register", run, "--name", "bench-mlp", ws=ws)
        for model in set(RUNTIMES.values()):
            kiln("models", "approve", f"{model}/1", "--reason", "benchmark", ws=ws)
        bundle = kiln("compile", "models:/bench/1", "--target", "x86_64", ws=ws)["path"]
        row = json.dumps({"instances": [dict.fromkeys(features, 0.25)]}).encode()
        uri = f"sqlite:///{ws}/models/mlflow.db"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri,
               "KILN_PUBLIC_KEY": str(ws / "artifacts" / "signing-key.pub"),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # mlflow runs uvicorn

        def process(name: str, command: list[str], ready: str) -> subprocess.Popen:
            log = root / f"{name}.log"
            procs.append(subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT))
            wait_ready(ready, log)
            return procs[-1]

        def stop(started: list[subprocess.Popen], endpoints: list[str]) -> None:
            for name in endpoints:
                subprocess.run([str(KILN), "endpoint", "delete", name, "-w", str(ws)], capture_output=True)
                deployed.remove(name)
            for p in started:
                p.terminate()
                p.wait(30)
                procs.remove(p)

        results: dict[str, list] = {}
        seen: dict[str, list[float]] = {}  # the full endpoint's primary variant's p99, as its front timed it
        for runtime, model in runtimes.items():
            print(f"… starting the {runtime} runtime: bare, and two endpoints", file=sys.stderr)
            targets: dict[str, str] = {}
            started: list[subprocess.Popen] = []
            if runtime == "mlflow":
                port = free_port()
                started.append(process("mlflow-serve", [
                    str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", "models:/bench/1", "-p",
                    str(port), "-h", "127.0.0.1", "--env-manager", "local"], f"http://127.0.0.1:{port}/ping"))
                targets["mlflow models serve"] = f"http://127.0.0.1:{port}/invocations"
            port = free_port()
            served = bundle if runtime == "tvm" else f"models:/{model}/1"
            started.append(process(f"bare-{runtime}", [
                sys.executable, "-m", "kiln.serving.server", "--name", model, "--model-uri", served, "--runtime",
                runtime, "--http-port", str(port)], f"http://127.0.0.1:{port}/v2/models/{model}/ready"))
            targets[f"{runtime} bare"] = f"http://127.0.0.1:{port}/v1/models/{model}:predict"
            variant = {"model": f"models:/{model}/1", "runtime": runtime}
            endpoints = []
            full = {"variants": [{"name": "blue", "weight": 9, **variant}, {"name": "green", "weight": 1, **variant}],
                    "shadow": {"name": "dark", "sample_percent": 100, **variant},
                    "capture": {"enabled": True, "sample_percent": 100}}
            for kind, short, spec in [("one variant", "one", {"variants": [{"name": "primary", **variant}]}),
                                      ("90/10 + shadow + capture", "full", full),
                                      (INLINE, "inline", {**full, "inline": True})]:
                name = f"b-{runtime}-{short}"
                (root / f"{name}.json").write_text(json.dumps({"name": name, **spec}))
                url = kiln("endpoint", "deploy", root / f"{name}.json", ws=ws)["url"]
                deployed.append(name)
                endpoints.append(name)
                targets[f"{runtime} endpoint, {kind}"] = f"{url}/v1/models/{name}:predict"
            for r in range(args.rounds):
                for name, url in targets.items():
                    print(f"… round {r + 1}/{args.rounds}: {name}", file=sys.stderr)
                    results.setdefault(name, []).append(load_test(url, row, args.seconds, args.connections))
                    if name.endswith("90/10 + shadow + capture"):
                        seen.setdefault(name, []).append(primary_p99(url))
            stop(started, endpoints)
        captured = sum(1 for f in (ws / "capture").rglob("*.jsonl") for _ in f.open())
    finally:
        for name in deployed:
            subprocess.run([str(KILN), "endpoint", "delete", name, "-w", str(ws)], capture_output=True)
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        shutil.rmtree(root, ignore_errors=True)

    def rps(name: str) -> float:
        return statistics.median(r.requests_per_second for r in results[name])

    def p99(name: str) -> float:
        return statistics.median(r.p99_ms for r in results[name])

    figures = []
    for runtime in runtimes:
        bare = f"{runtime} bare"
        for kind, short in [(INLINE, "full inline"), ("90/10 + shadow + capture", "full"),
                            ("one variant", "1 variant")]:
            name = f"{runtime} endpoint, {kind}"
            figures += [Figure(f"{runtime}: endpoint {short} rps", rps(name), "/s", rps(bare), "bare server",
                               "ratio >= 0.9" if kind == INLINE else ""),
                        Figure(f"{runtime}: endpoint {short} p99", p99(name), "ms", p99(bare), "bare server",
                               "ratio <= 1.25" if kind == INLINE else "")]
            if short == "full":  # how much of the endpoint's p99 its primary variant's server took, seen from the front
                figures.append(Figure(f"{runtime}: primary p99 behind the front", statistics.median(seen[name]),
                                      "ms", p99(bare), "bare server"))
    if "mlflow" in runtimes:
        figures.append(Figure("mlflow runtime rps", rps("mlflow bare"), "/s", rps("mlflow models serve"),
                              "mlflow models serve", "ratio >= 2"))
    if "tvm" in runtimes:
        if "mlflow" in runtimes:
            figures.append(Figure("tvm runtime rps", rps("tvm bare"), "/s", rps("mlflow bare"), "mlflow runtime",
                                  "ratio >= 4"))
        figures += [Figure("tvm runtime rps", rps("tvm bare"), "/s", 1000.0, "1,000 requests/s", "ratio >= 1"),
                    Figure("tvm runtime p99", p99("tvm bare"), "ms", 15.0, "15 ms", "ratio < 1")]
    notes = {"connections": args.connections, "seconds per test": args.seconds, "rounds": args.rounds,
             "failed requests (all tests)": sum(r.failures for rs in results.values() for r in rs),
             "capture records written": captured,
             "requests/s by round": {n: [round(r.requests_per_second) for r in rs] for n, rs in results.items()},
             "p99 ms by round": {n: [r.p99_ms for r in rs] for n, rs in results.items()}}
    return figures, notes


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--runtimes", nargs="+", choices=list(RUNTIMES), default=list(RUNTIMES))
    run_measured("Endpoint throughput per runtime (Kiln endpoint vs bare KServe vs mlflow models serve)", measure,
                 p.parse_args())
