"""`kiln endpoint` on loopback: deploy from a spec with a shadow, status, invoke, kiln status/down/up, delete."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.conftest import run_kiln
from tests.test_serving import ROWS, approve, serving_workspace

pytestmark = pytest.mark.slow

SPEC = """
name: toy
variants:
  - {name: blue, model: "models:/toy@challenger", weight: 9}
  - {name: green, model: "models:/toy/1", weight: 1}
shadow: {name: shadow, model: "models:/toy@challenger", sample_percent: 50}
capture: {flush_seconds: 0.2}
"""


@pytest.fixture
def ws(tmp_path: Path):
    root = serving_workspace(tmp_path / "ws")
    yield root
    run_kiln("down", "-w", root)


def serving_processes(ws: Path) -> list[int]:
    """Model servers and fronts running over this workspace's store or config."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            text = " ".join(proc.info["cmdline"] or []) + " " + " ".join(proc.environ().values())
        except psutil.Error:
            continue
        if "kiln.serving." in text and str(ws) in text:
            found.append(proc.info["pid"])
    return found


def ok(*args) -> dict:
    res = run_kiln(*args, "--json")
    assert res.code == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


def test_deploy_invoke_status_restart_and_delete(ws: Path) -> None:
    (ws / "toy.yaml").write_text(SPEC)
    state = ok("endpoint", "deploy", ws / "toy.yaml", "-w", ws)
    assert {v: i["model"] for v, i in state["variants"].items()} == \
        {"blue": "models:/toy/1", "green": "models:/toy/1", "shadow": "models:/toy/1"}, "aliases are pinned"
    res = run_kiln("endpoint", "deploy", ws / "toy.yaml", "-w", ws)
    assert res.code == 1 and "already deployed" in res.stderr
    assert len(serving_processes(ws)) == 4, "the front and three variants"

    answers = [ok("endpoint", "invoke", "toy", "--data", json.dumps({"instances": ROWS}), "-w", ws)
               for _ in range(3)]
    assert all(a["status"] == 200 and len(a["answer"]["predictions"]) == 2 for a in answers)
    green = ok("endpoint", "invoke", "toy", "--data", json.dumps({"instances": ROWS}), "--variant", "green",
               "-w", ws)
    assert green["variant"] == "green"
    status = ok("endpoint", "status", "toy", "-w", ws)
    assert status["live"]["shares"] == {"blue": 0.9, "green": 0.1}
    assert sum(v["requests"] for n, v in status["live"]["variants"].items() if n != "shadow") == 4
    assert set(status["processes"].values()) == {"running"}

    names = {s["name"]: s["state"] for s in ok("status", "-w", ws)["services"]}
    assert names["endpoint-toy"] == "running" and names["endpoint-toy-shadow"] == "running"
    ok("down", "-w", ws)
    with pytest.raises(httpx.HTTPError):
        httpx.get(status["url"] + "/v2/health/ready", timeout=2)
    assert {s["name"] for s in ok("up", "endpoint-toy", "-w", ws)["services"]} == \
        {"endpoint-toy", "endpoint-toy-blue", "endpoint-toy-green", "endpoint-toy-shadow"}, "the endpoint alone"
    assert ok("endpoint", "invoke", "toy", "--data", json.dumps({"instances": ROWS}), "-w", ws)["status"] == 200

    captured = list((ws / "capture" / "endpoint=toy").glob("hour=*/*.jsonl"))
    assert captured, "capture files are written under the workspace's capture store"
    front = ok("endpoint", "status", "toy", "-w", ws)["url"]
    for _ in range(20):  # straight to the front: a `kiln` process per request would cost a second each
        assert httpx.post(f"{front}/v1/models/toy:predict", json={"instances": ROWS}, timeout=30).status_code == 200
    import time

    time.sleep(1.0)  # the front flushes capture every 0.2 s
    compared = ok("endpoint", "compare", "toy", "-w", ws)
    assert compared["shadow_variant"] == "shadow" and compared["requests"] >= 5
    assert compared["rows"] == 2 * compared["requests"]
    assert compared["label_agreement"] == 1.0 and compared["score_max_abs_diff"] == 0.0, \
        "the shadow serves the same model version: the same answers"
    deleted = ok("endpoint", "delete", "toy", "-w", ws)
    assert set(deleted["stopped"]) == {"endpoint-toy", "endpoint-toy-blue", "endpoint-toy-green",
                                       "endpoint-toy-shadow"}
    assert ok("endpoint", "list", "-w", ws)["endpoints"] == []


def test_a_deploy_that_cannot_start_leaves_nothing_behind(ws: Path) -> None:
    res = run_kiln("endpoint", "deploy", "--model", "models:/toy/7", "-w", ws)
    assert res.code == 1 and "model toy has no version 7" in res.stderr
    (ws / "bad.yaml").write_text("name: Bad_Name\nvariants: []\n")
    res = run_kiln("endpoint", "deploy", ws / "bad.yaml", "-w", ws)
    assert res.code == 1 and "name: String should match" in res.stderr and "variants: List should have" in res.stderr
    for runtime, needle in [
        ("onnx", "variants[0].runtime onnx: models:/toy@challenger is a lgbm model with no ONNX graph"),
    ]:
        (ws / "runtime.yaml").write_text(f"name: toy\nvariants: [{{name: a, model: 'models:/toy@challenger', "
                                         f"runtime: {runtime}}}]\n")
        res = run_kiln("endpoint", "deploy", ws / "runtime.yaml", "-w", ws)
        assert res.code == 1 and needle in res.stderr, res.stderr
    res = run_kiln("endpoint", "status", "nope", "-w", ws)
    assert res.code == 1 and "no endpoint 'nope'" in res.stderr

    # Variants start side by side: one whose model cannot load fails the deploy, and the one that came up is stopped.
    run = ok("train", "-t", ws / "train.parquet", "-f", "lgbm", "--iterations", "2", "-w", ws)
    broken = ok("models", "register", run["run_id"], "--name", "toy", "-w", ws)["version"]["version"]
    approve(ws, f"toy/{broken}")
    [mlmodel] = (ws / "models").glob(f"artifacts/**/{run['model_uri'].rsplit('/', 1)[-1]}/artifacts/MLmodel")
    mlmodel.unlink()
    (ws / "half.yaml").write_text(f"name: toy\nvariants:\n  - {{name: good, model: 'models:/toy/1', weight: 1}}\n"
                                  f"  - {{name: bad, model: 'models:/toy/{broken}', weight: 1}}\n")
    res = run_kiln("endpoint", "deploy", ws / "half.yaml", "-w", ws)
    assert res.code == 2 and "endpoint-toy-bad exited while starting" in res.stderr, res.stderr[-2000:]
    assert (ws / ".kiln" / "logs" / "endpoint-toy-good.log").stat().st_size > 0, "the good variant was started"
    assert not serving_processes(ws), "and stopped again"
    assert ok("endpoint", "list", "-w", ws)["endpoints"] == []
    assert not any(s["name"].startswith("endpoint-") for s in ok("status", "-w", ws)["services"])
