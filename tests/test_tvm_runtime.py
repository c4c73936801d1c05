"""The TVM runtime: a compiled, signed bundle served by KServe, answering as the registered model does; a bundle
that fails its checks never serves; `kiln endpoint deploy --runtime tvm` compiles the version when it must."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import run_kiln
from tests.test_serving import model_server, serving_workspace, start_server, store_env
from tests.test_stack import free_port
from tests.test_training import FEATURES, synthetic

pytestmark = pytest.mark.slow


def held_out(n: int = 200) -> list[dict]:
    """Rows the model never saw, nulls included, as V1 instances."""
    frame = synthetic(n, seed=7)[FEATURES]
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in frame.to_dict(orient="records")]


def compile_bundle(root: Path, *extra: str) -> Path:
    res = run_kiln("compile", "models:/toy@challenger", "--target", "x86_64", *extra, "-w", root, "--json",
                   timeout=600)
    assert res.code == 0, res.stderr[-3000:]
    return Path(json.loads(res.stdout)["path"])


def key_env(root: Path) -> dict[str, str]:
    return {"KILN_PUBLIC_KEY": str(root / "artifacts" / "signing-key.pub")}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """`toy` compiled for this machine and served by the tvm runtime, beside the mlflow runtime on the version."""
    root = serving_workspace(tmp_path_factory.mktemp("tvm") / "ws")
    bundle = compile_bundle(root)
    tvm, tvm_url = start_server(["kiln.serving.server", "--name", "toy", "--model-uri", str(bundle), "--runtime",
                                 "tvm", "--http-port"], root, "/v2/models/toy/ready", "tvm.log", key_env(root))
    mlflow, mlflow_url = model_server(root, "toy", "models:/toy@challenger", "mlflow.log")
    yield root, bundle, tvm_url, mlflow_url
    for proc in (tvm, mlflow):
        proc.terminate()
        proc.wait(30)


def test_the_tvm_runtime_answers_as_the_mlflow_runtime(served) -> None:
    _, bundle, tvm_url, mlflow_url = served
    rows = held_out()
    got = httpx.post(f"{tvm_url}/v1/models/toy:predict", json={"instances": rows}, timeout=30)
    want = httpx.post(f"{mlflow_url}/v1/models/toy:predict", json={"instances": rows}, timeout=30)
    assert got.status_code == want.status_code == 200, got.text
    got_p, want_p = got.json()["predictions"], want.json()["predictions"]
    assert [p["prediction"] for p in got_p] == [p["prediction"] for p in want_p]
    assert max(abs(g["probability"] - w["probability"]) for g, w in zip(got_p, want_p)) <= 1e-5

    # V2 with one tensor per feature, and with the bundle's own encoded FP32 tensor.
    v2 = httpx.post(f"{tvm_url}/v2/models/toy/infer", timeout=30, json={"inputs": [
        {"name": "calls", "shape": [2], "datatype": "INT64", "data": [rows[0]["calls"], rows[1]["calls"]]},
        {"name": "tenure", "shape": [2], "datatype": "FP64", "data": [rows[0]["tenure"] or 0.0,
                                                                   rows[1]["tenure"] or 0.0]},
        {"name": "plan", "shape": [2], "datatype": "BYTES", "data": [rows[0]["plan"], rows[1]["plan"]]}]})
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o for o in v2.json()["outputs"]}
    assert outputs["probability"]["datatype"] == "FP64" and len(outputs["probability"]["data"]) == 2
    manifest = json.loads((bundle / "manifest.json").read_text())
    width = manifest["input"]["shape"][1]
    encoded = [[1.0] + [0.0] * (width - 1)]
    raw = httpx.post(f"{tvm_url}/v2/models/toy/infer", timeout=30, json={"inputs": [
        {"name": "features", "shape": [1, width], "datatype": "FP32", "data": encoded}]})
    assert raw.status_code == 200, raw.text
    bad = httpx.post(f"{tvm_url}/v2/models/toy/infer", timeout=30, json={"inputs": [
        {"name": "features", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]})
    assert bad.status_code == 400 and f"shape [N, {width}]" in bad.json()["error"]
    for body, needle in [({"instances": [{"calls": 1}]}, "missing feature(s)"),
                         ({"instances": [{**rows[0], "plan": 3}]}, "instances[0].plan must be text")]:
        res = httpx.post(f"{tvm_url}/v1/models/toy:predict", json=body, timeout=30)
        assert res.status_code == 400 and needle in res.json()["error"], res.text

    meta = httpx.get(f"{tvm_url}/v2/models/toy", timeout=30).json()
    assert [i["name"] for i in meta["inputs"]] == FEATURES
    assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {"probability": "FP64", "prediction": "INT64"}


def _refused(root: Path, bundle: Path, env: dict[str, str]) -> str:
    """What the tvm runtime's server says when it will not serve ``bundle`` (it must exit, not serve)."""
    res = subprocess.run([sys.executable, "-m", "kiln.serving.server", "--name", "toy", "--model-uri", str(bundle),
                          "--runtime", "tvm", "--http-port", str(free_port())], capture_output=True, text=True,
                         timeout=120, env={**os.environ, **store_env(root), **env})
    assert res.returncode != 0, "the server started on a bundle that fails its checks"
    return res.stderr


def test_a_bundle_that_fails_its_checks_never_serves(served, tmp_path: Path) -> None:
    root, bundle, _, _ = served
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle, tampered)
    library = next(tampered.glob("model-b1.so"))
    data = bytearray(library.read_bytes())
    data[len(data) // 2] ^= 0xFF
    library.write_bytes(bytes(data))
    assert "model-b1.so: sha256 differs from the manifest" in _refused(root, tampered, key_env(root))

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = tmp_path / "other.pub"
    other.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert "signature does not match" in _refused(root, bundle, {"KILN_PUBLIC_KEY": str(other)})
    assert "set KILN_PUBLIC_KEY" in _refused(root, bundle, {"KILN_PUBLIC_KEY": ""})

    # Re-signed by the workspace's own key with an expiry in the past: only the expiry is wrong.
    import base64

    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    expired = tmp_path / "expired"
    shutil.copytree(bundle, expired)
    manifest = json.loads((expired / "manifest.json").read_text())
    manifest["expires"] = "2026-01-01T00:00:00.000000+00:00"
    body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    key = load_pem_private_key((root / ".kiln" / "keys" / "artifact-signing.pem").read_bytes(), password=None)
    (expired / "manifest.json").write_bytes(body)
    (expired / "manifest.sig").write_text(base64.b64encode(key.sign(body)).decode() + "\n")
    stderr = _refused(root, expired, key_env(root))
    assert "expired at 2026-01-01" in stderr and "signature" not in stderr


def test_deploying_on_the_tvm_runtime_compiles_the_version_once(tmp_path: Path) -> None:
    root = serving_workspace(tmp_path / "ws")
    res = run_kiln("endpoint", "deploy", "--model", "models:/toy@challenger", "--runtime", "tvm", "-w", root,
                   "--json", timeout=600)
    try:
        assert res.code == 0, res.stderr[-3000:]
        deployed = json.loads(res.stdout)
        artifact = deployed["variants"]["primary"]["artifact"]
        assert artifact and (root / "artifacts" / "compiled" / artifact / "manifest.json").is_file()
        rows = held_out(5)
        answer = httpx.post(f"{deployed['url']}/v1/models/toy:predict", json={"instances": rows}, timeout=30)
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == 5
        listed = json.loads(run_kiln("artifacts", "list", "-w", root, "--json").stdout)
        assert [a["id"] for a in listed] == [artifact]
    finally:
        run_kiln("endpoint", "delete", "toy", "-w", root)
    again = run_kiln("endpoint", "deploy", "--model", "models:/toy@challenger", "--runtime", "tvm", "-w", root,
                     "--json", timeout=600)
    try:
        assert again.code == 0, again.stderr[-3000:]
        assert json.loads(again.stdout)["variants"]["primary"]["artifact"] == artifact, "the bundle is reused"
    finally:
        run_kiln("endpoint", "delete", "toy", "-w", root)
    refused = run_kiln("endpoint", "deploy", "--model", "models:/toy@challenger", "--runtime", "triton", "-w", root)
    assert refused.code == 1 and "unknown serving runtime 'triton'" in refused.stderr
