"""The Inference Recommender on loopback: each runtime the model can use load-tested with wrk, the fewest cores
meeting the goal chosen, its report, plot and a spec that deploys; and the load tests' own checks."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import psutil
import pytest

from kiln.errors import InputError
from kiln.serving.loadtest import load_test, parse_wrk
from tests.conftest import run_kiln
from tests.test_serving import serving_workspace

pytestmark = pytest.mark.slow

WRK = """Running 2s test @ http://127.0.0.1:9/
  1 threads and 4 connections
  Latency Distribution
     50%  812.00us
     75%    1.20ms
     90%    2.50ms
     99%   14.10ms
  4021 requests in 2.00s, 1.02MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:   2010.50
"""


def test_wrk_reports_are_read_and_only_loopback_is_loaded() -> None:
    r = parse_wrk(WRK, connections=4)
    assert (r.requests, r.requests_per_second, r.p50_ms, r.p90_ms, r.p99_ms, r.failures) == \
        (4021, 2010.5, 0.812, 2.5, 14.1, 6)
    with pytest.raises(InputError, match="loopback addresses only"):
        load_test("http://10.1.2.3:8080/v1/models/x:predict", b"{}", seconds=1)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return serving_workspace(tmp_path_factory.mktemp("recommend") / "ws")


def test_the_recommender_chooses_the_fewest_cores_meeting_the_goal_and_its_spec_deploys(ws: Path) -> None:
    res = run_kiln("endpoint", "recommend", "toy/1", "--p99-ms", "250", "--rps", "40", "--seconds", "2",
                   "--runtimes", "mlflow,onnx", "--replicas", "1,2", "-w", ws, "--json", timeout=600)
    assert res.code == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert doc["skipped"] == {"onnx": "a lgbm model has no ONNX graph"}
    assert [(t["runtime"], t["replicas"]) for t in doc["trials"]] == [("mlflow", 1), ("mlflow", 2)]
    for trial in doc["trials"]:
        assert len(trial["curve"]) == 5 and all(p["failures"] == 0 for p in trial["curve"])
        assert trial["at_rate"]["requests_per_second"] >= 36 and trial["meets"], trial["why"]
    assert doc["chosen"] == "mlflow x1", "both meet the goal: the one with fewer cores"
    outputs = {k: Path(v) for k, v in doc["outputs"].items()}
    assert outputs["png"].read_bytes().startswith(b"\x89PNG")
    assert "Recommended: <b>mlflow x1</b>" in outputs["html"].read_text()
    left = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"])
            if any("recommend-toy" in part for part in p.info["cmdline"] or [])]
    assert not left, f"load-tested servers still run: {left}"

    deployed = run_kiln("endpoint", "deploy", outputs["spec"], "-w", ws, "--json", timeout=300)
    try:
        assert deployed.code == 0, deployed.stderr[-2000:]
        url = json.loads(deployed.stdout)["url"]
        answer = httpx.post(f"{url}/v1/models/toy:predict", timeout=30,
                            json={"instances": [{"calls": 1, "tenure": 5.0, "plan": "basic"}]})
        assert answer.status_code == 200 and answer.headers["x-kiln-variant"] == "primary"
    finally:
        run_kiln("endpoint", "delete", "toy", "-w", ws)


def test_a_goal_no_configuration_meets_is_said_and_a_bad_goal_refused(ws: Path) -> None:
    res = run_kiln("endpoint", "recommend", "toy/1", "--p99-ms", "0.001", "--seconds", "1", "--runtimes", "mlflow",
                   "--replicas", "1", "-w", ws, timeout=600)
    assert res.code == 0, res.stderr[-3000:]
    assert "no configuration tried meets the goal" in res.stdout and "p99 over 0.001 ms at every load" in res.stdout
    for args, needle in [(["--p99-ms", "0"], "--p99-ms 0.0: give a latency goal above 0 ms"),
                         (["--p99-ms", "10", "--replicas", "0"], "--replicas [0]: give counts from 1 to 4"),
                         (["--p99-ms", "10", "--runtimes", "triton"], "unknown serving runtime 'triton'")]:
        bad = run_kiln("endpoint", "recommend", "toy/1", *args, "-w", ws)
        assert bad.code == 1 and needle in bad.stderr, bad.stderr
