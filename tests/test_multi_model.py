"""Multi-model endpoints. The server: versions of the registered models it serves load when KServe's repository
extension is asked for them (not before), answer as the registry's model does, and are unloaded least recently used
once the loaded ones pass the memory budget; a name it does not serve, or a version not cleared for production, is
refused saying why. The endpoint: a request names its version (X-Kiln-Target-Model on V1, the model on V2), or goes
to the default; each is captured under its version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from kiln.serving.spec import model_uri, served_name
from tests.conftest import run_kiln
from tests.test_serving import ROWS, approve, serving_workspace, store_env
from tests.test_stack import free_port

pytestmark = pytest.mark.slow


def start_server(source: list, log: Path, env: dict, cwd: Path | None = None) -> tuple[subprocess.Popen, str]:
    """The multi-model server of endpoint `many` with a 1 MB budget over ``source`` (its --models or --model-dir),
    once it answers ready; its log in ``log``."""
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "kiln.serving.multi_model", "--endpoint", "many", *source,
                                 "--budget-mb", "1", "--http-port", str(port)], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.terminate()
            raise AssertionError(log.read_text()[-3000:])
        time.sleep(0.3)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """toy versions 1 and 2 registered and approved, 3 pending; the server with a budget only one of them fits in."""
    root = serving_workspace(tmp_path_factory.mktemp("multi") / "ws")
    run_id = json.loads(run_kiln("models", "show", "toy/1", "-w", root, "--json").stdout)["run_id"]
    for _ in range(2):
        assert run_kiln("models", "register", run_id, "--name", "toy", "-w", root).code == 0
    approve(root, "toy/2")
    proc, url = start_server(["--models", "toy"], root / "multi.log", {**os.environ, **store_env(root)})
    yield url, root
    proc.terminate()
    proc.wait(timeout=30)


def test_names_map_to_registered_versions() -> None:
    assert served_name("models:/churn-eu/12") == "churn-eu-v12" and model_uri("churn-eu-v12") == "models:/churn-eu/12"
    assert model_uri("churn") is None


def test_a_version_loads_when_asked_and_the_least_recently_used_goes_over_the_budget(server) -> None:
    url, root = server
    predict = f"{url}/v1/models/toy-v1:predict"
    assert httpx.post(predict, json={"instances": ROWS}, timeout=30).status_code == 404, "nothing loaded at start"
    assert httpx.post(f"{url}/v2/repository/models/toy-v1/load", timeout=120).status_code == 200
    answer = httpx.post(predict, json={"instances": ROWS}, timeout=30)
    assert answer.status_code == 200, answer.text
    import mlflow.pyfunc
    import pandas as pd

    mlflow.set_tracking_uri(f"sqlite:///{root}/models/mlflow.db")
    want = mlflow.pyfunc.load_model("models:/toy/1").predict(pd.DataFrame(ROWS).astype({"calls": "float64"}))
    assert [p["probability"] for p in answer.json()["predictions"]] == pytest.approx(want["probability"].tolist())

    assert httpx.post(f"{url}/v2/repository/models/toy-v2/load", timeout=120).status_code == 200
    assert httpx.get(f"{url}/v2/models/toy-v2/ready", timeout=10).status_code == 200
    log = root / "multi.log"
    assert "unloaded toy-v1" in log.read_text(), "both do not fit a 1 MB budget"
    assert httpx.post(predict, json={"instances": ROWS}, timeout=60).json() == answer.json(), \
        "an unloaded version loads again when a request asks for it"
    assert log.read_text().count("loaded toy-v1 (") == 2 and "unloaded toy-v2" in log.read_text()
    refused = httpx.post(f"{url}/v2/repository/models/other-v1/load", timeout=30)
    assert refused.status_code == 503 and "serves NAME-vVERSION of toy" in refused.text
    pending = httpx.post(f"{url}/v2/repository/models/toy-v3/load", timeout=30)
    assert pending.status_code == 503 and "PendingManualApproval" in pending.text, pending.text


def test_a_multi_model_endpoint_sends_each_request_to_the_version_it_names(server) -> None:
    _, root = server
    (root / "many.yaml").write_text(json.dumps({
        "name": "many", "mode": "multi-model", "variants": [{"name": "main", "model": "models:/toy/1"}],
        "multi_model": {"budget_mb": 1}, "capture": {"flush_seconds": 0.2}}))
    res = run_kiln("endpoint", "deploy", root / "many.yaml", "-w", root, "--json", timeout=600)
    assert res.code == 0, res.stderr[-3000:]
    front = json.loads(res.stdout)["url"]
    try:
        v1 = f"{front}/v1/models/many:predict"
        default = httpx.post(v1, json={"instances": ROWS}, timeout=120)
        assert default.status_code == 200, default.text
        named = httpx.post(v1, json={"instances": ROWS}, headers={"x-kiln-target-model": "toy/2"}, timeout=120)
        assert named.status_code == 200 and named.json()["predictions"] == default.json()["predictions"], \
            "the same run: the same answers"
        assert (default.json()["model_name"], named.json()["model_name"]) == ("toy-v1", "toy-v2"), "who answered"
        v2 = httpx.post(f"{front}/v2/models/toy-v1/infer", timeout=120, json={"inputs": [
            {"name": "calls", "shape": [2], "datatype": "INT64", "data": [5, 0]},
            {"name": "tenure", "shape": [2], "datatype": "FP64", "data": [40.0, 900.0]},
            {"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["basic", "pro"]}]})
        assert v2.status_code == 200, "loaded again after toy-v2 pushed it out of the budget"
        pending = httpx.post(v1, json={"instances": ROWS}, headers={"x-kiln-target-model": "toy-v3"}, timeout=60)
        assert pending.status_code == 404 and "only an Approved version" in pending.json()["error"]
        bad = httpx.post(v1, json={"instances": ROWS}, headers={"x-kiln-target-model": "toy"}, timeout=60)
        assert bad.status_code == 400 and "NAME-vVERSION" in bad.json()["error"]
        time.sleep(1)
        refused = run_kiln("endpoint", "update", "many", "--model", "toy/2", "-w", root)
        assert refused.code == 1 and "multi-model: it has no rollout" in refused.stderr, refused.stderr
        # Monitors per version: each judged on the requests it answered, against its own baseline.
        for model, records in (("toy/2", 1), (None, 2)):
            res = run_kiln("monitor", "run", "--endpoint", "many", *(["--model", model] if model else []), "-w", root,
                           "--json", timeout=600)
            assert res.code == 0, res.stderr[-3000:]
            run = json.loads(res.stdout)
            assert (run["model"], run["records"]) == (model or "toy/1", records), run
            assert run["variants"] == {served_name(f"models:/{model or 'toy/1'}"): len(ROWS) * records}, \
                "rows by version"
    finally:
        run_kiln("endpoint", "delete", "many", "-w", root)
    from kiln.serving.capture import read_capture

    versions = [r["variant"] for r in read_capture(root / "capture", "many") if r["status"] == 200]
    assert versions == ["toy-v1", "toy-v2", "toy-v1"], "each request captured under its version"


def test_on_a_cluster_the_server_serves_the_folders_kserves_agent_downloaded(server, tmp_path) -> None:
    """`--model-dir`, as the chart's kiln-multi-model runtime runs it: KServe's model agent puts each TrainedModel's
    files in a folder of its name and asks the server to load it; requests go straight to the server."""
    import mlflow

    _, root = server
    mlflow.set_tracking_uri(f"sqlite:///{root}/models/mlflow.db")
    for version in ("1", "2"):
        mlflow.artifacts.download_artifacts(f"models:/toy/{version}", dst_path=str(tmp_path / f"toy-v{version}"))
    proc, url = start_server(["--model-dir", tmp_path], tmp_path / "server.log", os.environ.copy(), cwd=tmp_path)
    try:
        for name in ("toy-v1", "toy-v2"):  # what the agent asks for each TrainedModel
            assert httpx.post(f"{url}/v2/repository/models/{name}/load", timeout=120).status_code == 200
        answers = {name: httpx.post(f"{url}/v1/models/{name}:predict", json={"instances": ROWS}, timeout=120)
                   for name in ("toy-v1", "toy-v2")}
        assert all(a.status_code == 200 for a in answers.values()), {n: a.text for n, a in answers.items()}
        assert answers["toy-v1"].json()["predictions"] == answers["toy-v2"].json()["predictions"], \
            "the same run registered twice"
        assert (tmp_path / "server.log").read_text().count("loaded toy-v1 (") == 2, \
            "toy-v1 was unloaded for the budget when toy-v2 loaded, and loaded again by its request"
        missing = httpx.post(f"{url}/v2/repository/models/toy-v9/load", timeout=30)
        assert missing.status_code == 503 and "no folder" in missing.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
