"""Kiln Studio's page times on a big workspace: 1,000 model versions (10 models), 100 endpoints, 10,000 monitor runs
(100 per endpoint), each page fetched over HTTP from Studio's own server process, as a browser would fetch its HTML.

The versions are registered through MLflow's client with the tags Kiln gives a version (task, family, test metrics,
gate, approval history, lineage, compiled bundles); the endpoints are written as Kiln records deployed endpoints
(their state files; their processes are not started, so each shows as stopped); the monitor runs as a monitor run
writes its result (kiln.monitoring.run.write_result: drift scores of 12 features, violations). Goal: every page answers in at most 300 ms on 2 cores (the slowest of
20 fetches, after one warm fetch).

    .venv/bin/python benchmarks/studio_pages.py \
    [--versions 1000] [--endpoints 100] [--runs 100] [--fetches 20] [--json]
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

from _kiln import KILN
from _report import Figure, parser, run_measured

MODELS = 10
GOAL_MS = 300.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def register_versions(ws: Path, count: int) -> list[str]:
    """``count`` versions over MODELS models, tagged as Kiln tags its versions; their refs."""
    from mlflow import MlflowClient

    from kiln.workspace import open_workspace

    client = MlflowClient(open_workspace(ws).settings.mlflow.tracking_uri)
    refs = []
    for m in range(MODELS):
        client.create_registered_model(f"model-{m:02d}")
    for i in range(count):
        name = f"model-{i % MODELS:02d}"
        history = [{"event": "registered", "status": "PendingManualApproval", "at": "2026-12-01T10:00:00+00:00",
                    "gate": "passed"}, {"event": "approved", "status": "Approved", "by": "bench", "reason": "review",
                                        "at": "2026-12-01T11:00:00+00:00"}]
        tags = {"kiln.task": "binary", "kiln.family": "lgbm", "kiln.test_auc": str(0.8 + i / 1e5),
                "kiln.test_f1": "0.7", "kiln.gate": "passed", "kiln.gate_reasons": "[]",
                "kiln.approval_status": "Approved", "kiln.approval_history": json.dumps(history),
                "kiln.dataset": f"data-{i}", "kiln.dataset_content_hash": f"{i:064x}",
                "kiln.feature_service": "svc", "kiln.training_set": f"training/{i}.parquet",
                "kiln.pipeline_run": f"run-{i}", "kiln.compiled.x86_64": f"{name}-v{i}-x86_64-20261201T000000 (run r)"}
        mv = client.create_model_version(name, str(ws / "models" / "artifacts" / f"m-{i}"), tags=tags)
        refs.append(f"{name}/{mv.version}")
        if (i + 1) % 200 == 0:
            print(f"… {i + 1}/{count} versions registered", file=sys.stderr)
    for m in range(MODELS):
        client.set_registered_model_alias(f"model-{m:02d}", "champion", "1")
    return refs


def write_endpoints(ws: Path, count: int, refs: list[str]) -> None:
    """``count`` endpoints as `kiln endpoint deploy` records them, each with two variants and a shadow and 50 history
    entries."""
    from kiln.serving.history import entry
    from kiln.serving.local import EndpointState, VariantRecord, write_state
    from kiln.serving.spec import EndpointSpec
    from kiln.workspace import open_workspace

    opened = open_workspace(ws)
    for e in range(count):
        name = f"endpoint-{e:03d}"
        models = [f"models:/{refs[(e * 3 + k) % len(refs)]}" for k in range(3)]
        spec = EndpointSpec.model_validate({
            "name": name, "variants": [{"name": "blue", "model": models[0], "weight": 9},
                                       {"name": "green", "model": models[1], "weight": 1}],
            "shadow": {"name": "dark", "model": models[2]}})
        port = 20000 + e * 4
        variants = {v: VariantRecord(model=m, requested=m, port=port + 1 + k, role="shadow" if v == "dark"
                                     else "production") for k, (v, m) in enumerate(zip(("blue", "green", "dark"),
                                                                                        models))}
        history = [entry("deployed", "blue", models[0], "bench") for _ in range(50)]
        write_state(opened, EndpointState(name=name, spec=spec, router_port=port, variants=variants, history=history))


def write_monitor_runs(ws: Path, endpoints: int, runs: int) -> None:
    """``runs`` finished monitor runs per endpoint, every fourth with drift violations."""
    from datetime import UTC, datetime, timedelta

    from kiln.monitoring.endpoint import reports_folder
    from kiln.monitoring.run import (
        AttributionDrift,
        BiasDrift,
        DataDrift,
        DataQuality,
        ModelQuality,
        MonitorRun,
        Monitors,
        write_result,
    )
    from kiln.monitoring.violations import Violation
    from kiln.monitoring.window import Window
    from kiln.workspace import open_workspace

    opened = open_workspace(ws)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for e in range(endpoints):
        endpoint = f"endpoint-{e:03d}"
        for i in range(runs):
            until = start + timedelta(hours=i)
            run = f"monitor-{until.strftime('%Y%m%dT%H%M%S')}-{e:03d}{i:03d}"
            out = reports_folder(opened, endpoint) / run
            out.mkdir(parents=True)
            drifted = i % 4 == 0
            columns = [{"feature": f"f{k:02d}", "type": "numeric", "method": "Wasserstein distance (normed)",
                        "score": 0.2 if drifted and k < 2 else 0.01, "threshold": 0.1, "drifted": drifted and k < 2}
                       for k in range(12)]
            violations = [Violation("data_drift", c["feature"], c["method"], None, c["score"], 0.1) for c in columns
                          if c["drifted"]]
            monitors = Monitors(DataQuality(400, 0, {}), DataDrift(400, columns, [c["feature"] for c in columns
                                                                                if c["drifted"]]),
                                ModelQuality(0, {}, note="no labels"), BiasDrift(note="no labels"),
                                AttributionDrift(400, 0.97, 0.9, []))
            write_result(MonitorRun(
                endpoint=endpoint, run=run, model="model-00/1", baseline="-", baseline_made=False,
                window=Window(until - timedelta(hours=1), until), records=400, rows=400, shadow_records_skipped=0,
                variants={"blue": 400}, read_seconds=0.1, status="violations" if violations else "ok",
                monitors=monitors, violations=violations, finished_unix=until.timestamp() + 3, report=None,
                metrics=str(out / "metrics.prom"), violations_file=str(out / "violations.json"), outputs=str(out),
                message=None, evidently_project=None), name_outputs=False)
        if (e + 1) % 20 == 0:
            print(f"… monitor runs of {e + 1}/{endpoints} endpoints written", file=sys.stderr)


def measure(args) -> tuple[list[Figure], dict]:
    import httpx

    root = Path(tempfile.mkdtemp(prefix="kiln-bench-studio-"))
    proc = None
    try:
        ws = root / "ws"
        subprocess.run([str(KILN), "init", str(ws)], check=True, capture_output=True)
        print(f"… registering {args.versions} versions and writing {args.endpoints} endpoints", file=sys.stderr)
        refs = register_versions(ws, args.versions)
        write_endpoints(ws, args.endpoints, refs)
        write_monitor_runs(ws, args.endpoints, args.runs)
        port = free_port()
        log = (root / "studio.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "kiln.studio.app", "--workspace", str(ws), "--port",
                                 str(port)], stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        pages = {"models": "/models", "model version": f"/models/{refs[-1]}", "endpoints": "/endpoints",
                 "endpoint": f"/endpoints/endpoint-{args.endpoints // 2:03d}", "monitors": "/monitors",
                 "monitor": f"/monitors/endpoint-{args.endpoints // 2:03d}", "pipelines": "/pipelines",
                 "features": "/features", "edge": "/edge"}
        times: dict[str, list[float]] = {}
        sizes = {}
        with httpx.Client(timeout=30) as client:
            for name, path in pages.items():
                res = client.get(url + path)  # warm
                assert res.status_code == 200, f"{path}: {res.status_code} {res.text[:300]}"
                sizes[name] = len(res.content)
                times[name] = []
                for _ in range(args.fetches):
                    t0 = time.perf_counter()
                    client.get(url + path).raise_for_status()
                    times[name].append((time.perf_counter() - t0) * 1000)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(root, ignore_errors=True)
    figures = []
    for name, ms in times.items():
        figures.append(Figure(f"{name}: slowest fetch", max(ms), "ms", GOAL_MS, "300 ms", "ratio <= 1"))
        figures.append(Figure(f"{name}: median fetch", statistics.median(ms), "ms", GOAL_MS, "300 ms"))
    notes = {"versions": args.versions, "models": MODELS, "endpoints": args.endpoints,
             "monitor runs": args.endpoints * args.runs, "fetches per page": args.fetches,
             "page sizes (bytes)": sizes}
    return figures, notes


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--versions", type=int, default=1000)
    p.add_argument("--endpoints", type=int, default=100)
    p.add_argument("--runs", type=int, default=100, help="monitor runs per endpoint")
    p.add_argument("--fetches", type=int, default=20)
    run_measured("Kiln Studio page times on a big workspace", measure, p.parse_args())
