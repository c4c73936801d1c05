"""A registered model served by KServe on loopback: V1 and V2 routes, schema validation, metrics."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import run_kiln
from tests.test_stack import free_port, serving_base_port
from tests.test_training import FEATURES, synthetic, write_set

pytestmark = pytest.mark.slow


def train_and_register(root: Path, name: str = "toy") -> None:
    """A small LightGBM model on synthetic rows, registered as NAME@challenger (version 1; it passes the gate) and
    approved, in the workspace at ``root``: an endpoint's production variants serve only approved versions."""
    assert run_kiln("init", root).code == 0
    train = write_set(root / "train.parquet", synthetic(), FEATURES)
    res = run_kiln("train", "-t", train, "-f", "lgbm", "--iterations", "3", "-w", root, "--json")
    assert res.code == 0, res.stderr[-2000:]
    res = run_kiln("models", "register", json.loads(res.stdout)["run_id"], "--name", name, "-w", root, "--json")
    assert res.code == 0, res.stderr[-2000:]
    approve(root, f"{name}/{json.loads(res.stdout)['version']['version']}")


def approve(root: Path, ref: str) -> None:
    """`kiln models approve REF` in the workspace at ``root``."""
    res = run_kiln("models", "approve", ref, "--reason", "reviewed for the tests", "-w", root)
    assert res.code == 0, res.stderr[-2000:]


def store_env(root: Path) -> dict[str, str]:
    """The workspace's MLflow store for a server process (MLflow leaves the URIs an earlier test set in
    `os.environ`)."""
    uri = f"sqlite:///{root}/models/mlflow.db"
    return {"MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri}


def serving_workspace(root: Path) -> Path:
    """A workspace with `toy` registered, every port it may bind free (services and endpoints)."""
    train_and_register(root)
    text = (root / "kiln.yaml").read_text()
    text = text.replace("port: 5000", f"port: {free_port()}").replace("port: 6566", f"port: {free_port()}")
    text = text.replace("port: 6580", f"port: {free_port()}")
    text = text.replace("port: 8000", f"port: {free_port()}").replace("port: 8070", f"port: {free_port()}")
    (root / "kiln.yaml").write_text(text + f"serving:\n  base_port: {serving_base_port()}\n")
    return root


def start_server(args: list[str], root: Path, ready_path: str, log_name: str,
                 env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """A server process (python -m ...) on a free loopback port, once ``ready_path`` answers 200."""
    port = free_port()
    env = {**os.environ, **store_env(root), **(env or {})}
    log = (root / log_name).open("w")
    proc = subprocess.Popen([sys.executable, "-m", *args, str(port)], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}{ready_path}", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    pytest.fail((root / log_name).read_text()[-3000:])


def model_server(root: Path, name: str, model_uri: str, log_name: str) -> tuple[subprocess.Popen, str]:
    return start_server(["kiln.serving.server", "--name", name, "--model-uri", model_uri, "--http-port"], root,
                        f"/v2/models/{name}/ready", log_name)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """A model trained and registered in a fresh workspace, served by `python -m kiln.serving.server`."""
    root = tmp_path_factory.mktemp("serving") / "ws"
    train_and_register(root)
    proc, url = model_server(root, "toy", "models:/toy@challenger", "server.log")
    yield url, root
    proc.terminate()
    proc.wait(30)


ROWS = [{"calls": 5, "tenure": 40.0, "plan": "basic"}, {"calls": 0, "tenure": 900.0, "plan": "pro"}]


def test_v1_and_v2_predict_the_same_as_the_registered_model(served) -> None:
    import mlflow.pyfunc
    import pandas as pd

    url, root = served
    v1 = httpx.post(f"{url}/v1/models/toy:predict", json={"instances": ROWS}, timeout=30)
    assert v1.status_code == 200, v1.text
    got = [p["probability"] for p in v1.json()["predictions"]]
    mlflow.set_tracking_uri(f"sqlite:///{root}/models/mlflow.db")
    frame = pd.DataFrame(ROWS).astype({"calls": "float64"})
    want = mlflow.pyfunc.load_model("models:/toy@challenger").predict(frame)["probability"].tolist()
    assert got == pytest.approx(want, abs=1e-12)
    assert got[0] > got[1], "many calls and short tenure churn more in the synthetic rule"

    v2 = httpx.post(f"{url}/v2/models/toy/infer", timeout=30, json={"inputs": [
        {"name": "calls", "shape": [2], "datatype": "INT64", "data": [5, 0]},
        {"name": "tenure", "shape": [2], "datatype": "FP64", "data": [40.0, 900.0]},
        {"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["basic", "pro"]}]})
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o["data"] for o in v2.json()["outputs"]}
    assert outputs["probability"] == pytest.approx(want, abs=1e-12)
    assert "# TYPE" in httpx.get(f"{url}/metrics", timeout=10).text


@pytest.mark.parametrize("body, needle", [
    ({"instances": [{"calls": 1, "tenure": 3.0}]}, "missing feature(s) plan"),
    ({"instances": [{**ROWS[0], "age": 3}]}, "unknown feature(s) age"),
    ({"instances": [{**ROWS[0], "calls": "many"}]}, "instances[0].calls must be a number"),
    ({"instances": [{**ROWS[0], "plan": 7}]}, "instances[0].plan must be text"),
    ({"instances": [[1, 2.0]]}, "the model takes 3"),
    ({"instances": []}, "non-empty list"),
    ({"rows": ROWS}, "'instances'"),
])
def test_bad_requests_get_400_naming_the_field(served, body: dict, needle: str) -> None:
    url, _ = served
    res = httpx.post(f"{url}/v1/models/toy:predict", json=body, timeout=30)
    assert res.status_code == 400, res.text
    assert needle in res.json()["error"]


def test_the_server_counts_inference_requests_by_status_and_times_them(served) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    url, _ = served

    def scraped() -> dict[tuple[str, str], float]:
        families = text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text)
        return {(s.name, s.labels.get("code", "")): s.value for f in families for s in f.samples
                if s.name in ("kiln_model_requests_total", "kiln_model_request_seconds_count")
                and s.labels.get("model") == "toy"}

    before = scraped()
    for body in ({"instances": ROWS}, {"instances": ROWS}, {"instances": []}):
        httpx.post(f"{url}/v1/models/toy:predict", json=body, timeout=30)
    httpx.get(f"{url}/v2/models/toy/ready", timeout=10)  # a probe: not counted
    after = scraped()

    def grew(key: tuple[str, str]) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew(("kiln_model_requests_total", "200")) == 2 and grew(("kiln_model_requests_total", "400")) == 1
    assert grew(("kiln_model_request_seconds_count", "")) == 3


def test_the_server_listens_on_loopback_only(served) -> None:
    import psutil

    url, _ = served
    port = int(url.rsplit(":", 1)[1])
    listening = [c for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port]
    assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening)


def test_batch_transform_keeps_ids_and_resumes(served, tmp_path: Path) -> None:
    import mlflow.pyfunc

    _, root = served
    rows = synthetic(n=2500, seed=4)[["customer_id", *FEATURES]]
    rows["customer_id"] = rows["customer_id"] + 10_000
    rows.to_parquet(tmp_path / "in.parquet", index=False)
    out = tmp_path / "scored"
    args = ("batch-transform", "--model", "models:/toy@challenger", "--input", tmp_path / "in.parquet", "--output",
            out, "--batch-size", "1000", "--id-column", "customer_id", "-w", root, "--json")
    res = run_kiln(*args)
    assert res.code == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)["parts"] == 3
    from kiln.serving.batch import read_output

    scored = read_output(out)
    assert scored["customer_id"].tolist() == rows["customer_id"].tolist()
    mlflow.set_tracking_uri(f"sqlite:///{root}/models/mlflow.db")
    direct = mlflow.pyfunc.load_model("models:/toy@challenger").predict(
        rows[FEATURES].astype({"calls": "float64"}))["probability"]
    assert scored["probability"].tolist() == pytest.approx(direct.tolist(), abs=1e-12)

    (out / "part-00001.parquet").unlink()  # as if interrupted before the second batch was written
    res = run_kiln(*args)
    assert res.code == 0 and json.loads(res.stdout)["skipped_parts"] == 2
    assert read_output(out)["customer_id"].tolist() == rows["customer_id"].tolist()

    res = run_kiln(*args[:2], "models:/toy/1", *args[3:])
    assert res.code == 1 and "holds another job's results" in res.stderr
    rows.drop(columns=["plan"]).to_parquet(tmp_path / "bad.parquet", index=False)
    res = run_kiln("batch-transform", "--model", "models:/toy@challenger", "--input", tmp_path / "bad.parquet",
                   "--output", tmp_path / "never", "-w", root)
    assert res.code == 1 and "missing feature columns the model needs: plan" in res.stderr
    assert not (tmp_path / "never").exists()


def test_batch_transform_reads_and_writes_s3(served, aws, tmp_path: Path) -> None:
    """Input and output on the S3 API (SeaweedFS): each part an object, the same resume, a missing key named."""
    _, root = served
    rows = synthetic(n=1500, seed=5)[["customer_id", *FEATURES]]
    buffer = io.BytesIO()
    rows.to_parquet(buffer, index=False)
    run = uuid.uuid4().hex[:6]
    aws.client().put_object(Bucket="kiln", Key=f"batch-{run}/in.parquet", Body=buffer.getvalue())
    args = ("batch-transform", "--model", "models:/toy@challenger", "--input", f"s3://kiln/batch-{run}/in.parquet",
            "--output", f"s3://kiln/batch-{run}/scored", "--batch-size", "1000", "--id-column", "customer_id",
            "-w", root, "--json")
    res = run_kiln(*args)
    assert res.code == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)["output"] == f"s3://kiln/batch-{run}/scored"
    listed = aws.client().list_objects_v2(Bucket="kiln", Prefix=f"batch-{run}/scored/")["Contents"]
    assert sorted(o["Key"].rsplit("/", 1)[1] for o in listed) == ["_manifest.json", "part-00000.parquet",
                                                                   "part-00001.parquet"]
    from kiln.serving.batch import read_output

    assert read_output(f"s3://kiln/batch-{run}/scored")["customer_id"].tolist() == rows["customer_id"].tolist()
    res = run_kiln(*args)
    assert res.code == 0 and json.loads(res.stdout)["skipped_parts"] == 2, "a rerun finds every part there"
    res = run_kiln(*args[:4], f"s3://kiln/batch-{run}/nothing.parquet", *args[5:])
    assert res.code == 1 and f"--input s3://kiln/batch-{run}/nothing.parquet" in res.stderr, res.stderr
    res = run_kiln(*args[:4], "s3://Not_A_Bucket/in.parquet", *args[5:])
    assert res.code == 1 and "--input s3://Not_A_Bucket/in.parquet: not an S3 object" in res.stderr, res.stderr
    (tmp_path / "a-file").write_text("x")
    res = run_kiln(*args[:6], tmp_path / "a-file", *args[7:])
    assert res.code == 1 and "a file, not a folder" in res.stderr and (tmp_path / "a-file").read_text() == "x"


@pytest.fixture(scope="module")
def onnx_served(served):
    """An MLP registered beside `toy`, served by the onnx runtime (its ONNX graph on ONNX Runtime alone)."""
    _, root = served
    res = run_kiln("train", "-t", root / "train.parquet", "-f", "mlp", "--iterations", "3", "-w", root, "--json")
    assert res.code == 0, res.stderr[-2000:]
    res = run_kiln("models", "register", json.loads(res.stdout)["run_id"], "--name", "toymlp", "-w", root, "--json")
    assert res.code == 0, res.stderr[-2000:]
    proc, url = start_server(["kiln.serving.server", "--name", "toymlp", "--model-uri", "models:/toymlp@challenger",
                              "--runtime", "onnx", "--http-port"], root, "/v2/models/toymlp/ready", "onnx.log")
    yield url, root
    proc.terminate()
    proc.wait(30)


def test_the_onnx_runtime_answers_as_the_registered_mlp(onnx_served) -> None:
    import mlflow.pyfunc
    import pandas as pd

    url, root = onnx_served
    mlflow.set_tracking_uri(f"sqlite:///{root}/models/mlflow.db")
    model = mlflow.pyfunc.load_model("models:/toymlp@challenger")
    frame = pd.DataFrame(ROWS).astype({"calls": "float64"})
    want = model.predict(frame)["probability"].tolist()
    v1 = httpx.post(f"{url}/v1/models/toymlp:predict", json={"instances": ROWS}, timeout=30)
    assert v1.status_code == 200, v1.text
    assert [p["probability"] for p in v1.json()["predictions"]] == pytest.approx(want, abs=1e-6)

    # The graph's own input: the rows already encoded, as KServe's ONNX runtime takes them in a cluster.
    encoded = model.unwrap_python_model().predictor.encoder.transform(frame)
    v2 = httpx.post(f"{url}/v2/models/toymlp/infer", timeout=30, json={"inputs": [
        {"name": "features", "shape": list(encoded.shape), "datatype": "FP32", "data": encoded.tolist()}]})
    assert v2.status_code == 200, v2.text
    assert {o["name"]: o["data"] for o in v2.json()["outputs"]}["probability"] == pytest.approx(want, abs=1e-6)

    bad = httpx.post(f"{url}/v2/models/toymlp/infer", timeout=30, json={"inputs": [
        {"name": "features", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]})
    assert bad.status_code == 400 and f"shape [N, {encoded.shape[1]}]" in bad.json()["error"]
    missing = httpx.post(f"{url}/v1/models/toymlp:predict", json={"instances": [{"calls": 1}]}, timeout=30)
    assert missing.status_code == 400 and "missing feature(s)" in missing.json()["error"]


def test_the_onnx_runtime_refuses_a_tree_model(served) -> None:
    _, root = served
    env = {**os.environ, **store_env(root)}
    res = subprocess.run([sys.executable, "-m", "kiln.serving.server", "--name", "toy", "--model-uri",
                          "models:/toy@challenger", "--runtime", "onnx", "--http-port", str(free_port())],
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "no ONNX graph; serve it with runtime mlflow" in res.stderr
