"""The Open Inference Protocol (V2) at an endpoint's own URL, tried as a new user would: with tritonclient, a
well-known third-party V2 client, against an endpoint of each runtime with two production variants, a shadow and
capture: health, readiness, server and model metadata, inference in JSON and in the binary tensor extension."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from kiln.serving.capture import read_capture
from tests.conftest import run_kiln
from tests.test_serving import serving_workspace

pytestmark = pytest.mark.slow
ROWS = {"calls": np.array([5.0, 0.0]), "tenure": np.array([40.0, 900.0]),
        "plan": np.array([b"basic", b"pro"], dtype=np.object_)}
TYPES = {"calls": "FP64", "tenure": "FP64", "plan": "BYTES"}


def ok(*args: object) -> dict:
    res = run_kiln(*args, "--json", timeout=600)
    assert res.code == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory):
    """`toy` (LightGBM) on the mlflow and tvm runtimes and `toymlp` (an MLP) on the onnx runtime, each an
    endpoint of two production variants (90/10) with the same version as a shadow, capture on; the onnx and tvm
    ones serve their production variants inline (in the front's process), the mlflow one each in its own."""
    root = serving_workspace(tmp_path_factory.mktemp("v2") / "ws")
    run = ok("train", "-t", root / "train.parquet", "-f", "mlp", "--iterations", "3", "-w", root)
    ok("models", "register", run["run_id"], "--name", "toymlp", "-w", root)
    ok("models", "approve", "toymlp/1", "--reason", "tried with a V2 client", "-w", root)  # toy/1 already is
    urls = {}
    for name, model, runtime in [("v2-mlflow", "toy", "mlflow"), ("v2-onnx", "toymlp", "onnx"),
                                 ("v2-tvm", "toy", "tvm")]:
        variant = {"model": f"models:/{model}/1", "runtime": runtime}
        spec = {"name": name, "variants": [{"name": "blue", "weight": 9, **variant},
                                           {"name": "green", "weight": 1, **variant}],
                "shadow": {"name": "dark", "sample_percent": 100, **variant},
                "capture": {"flush_seconds": 0.2}, "inline": runtime != "mlflow"}
        (root / f"{name}.yaml").write_text(json.dumps(spec))
        urls[runtime] = (name, ok("endpoint", "deploy", root / f"{name}.yaml", "-w", root)["url"])
    yield root, urls
    for name, _ in urls.values():
        run_kiln("endpoint", "delete", name, "-w", root)


def _registered(root: Path, model: str) -> np.ndarray:
    import mlflow.pyfunc
    import pandas as pd

    mlflow.set_tracking_uri(f"sqlite:///{root}/models/mlflow.db")
    frame = pd.DataFrame({k: (v.astype(str) if k == "plan" else v) for k, v in ROWS.items()})
    return mlflow.pyfunc.load_model(f"models:/{model}/1").predict(frame)["probability"].to_numpy()


@pytest.mark.parametrize("runtime", ["mlflow", "onnx", "tvm"])
def test_a_v2_client_uses_every_route_at_the_endpoints_url(endpoints, runtime: str) -> None:
    import tritonclient.http as triton

    root, urls = endpoints
    name, url = urls[runtime]
    model = "toymlp" if runtime == "onnx" else "toy"
    client = triton.InferenceServerClient(url=url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(name)
    assert not client.is_model_ready("nope"), "a model the endpoint does not serve is not ready"
    server = client.get_server_metadata()
    assert server["name"] and server["version"], server
    meta = client.get_model_metadata(name)
    assert meta["name"] == name
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == \
        [(n, TYPES[n], [-1]) for n in ("calls", "tenure", "plan")]
    assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {"probability": "FP64", "prediction": "INT64"}

    want = _registered(root, model)
    for binary in (False, True):
        inputs = []
        for feature, values in ROWS.items():
            tensor = triton.InferInput(feature, [2], TYPES[feature])
            tensor.set_data_from_numpy(values, binary_data=binary)
            inputs.append(tensor)
        outputs = [triton.InferRequestedOutput(o, binary_data=binary) for o in ("probability", "prediction")]
        answer = client.infer(name, inputs, outputs=outputs, request_id=f"{runtime}-{binary}")
        assert np.allclose(answer.as_numpy("probability"), want, atol=1e-5), (binary, answer.get_response())
        assert answer.as_numpy("prediction").dtype == np.int64

    # Both requests are captured in the V2 JSON form (the binary one decoded), each beside the shadow's answer.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        records = [r for r in read_capture(root / "capture", name) if r["request"].get("inputs")]
        if len(records) >= 4:
            break
        time.sleep(0.3)
    assert len(records) == 4 and sorted(r["shadow"] for r in records) == [False, False, True, True]
    assert all(r["status"] == 200 for r in records)
    for r in records:
        assert {i["name"]: i["data"] for i in r["request"]["inputs"]} == \
            {"calls": [5.0, 0.0], "tenure": [40.0, 900.0], "plan": ["basic", "pro"]}
