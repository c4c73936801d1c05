"""The capture collector (`python -m kiln.serving.collector`): KServe's payload logger's CloudEvents in, the capture
records the monitors read out; here as a process and in the platform image as the chart runs it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import run_kiln
from tests.containers import Images, docker
from tests.test_images import RESTRICTED
from tests.test_stack import free_port

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"
ROW = {"instances": [{"customer_id": "C1", "tenure_months": 3}]}
ANSWER = {"predictions": [{"churned": 1, "probability": 0.81}]}


def event(url: str, kind: str, inference_id: str, body: object, at: str | None = None, **headers: str):
    """One CloudEvent in binary mode, as KServe's logger posts it."""
    sent = {"ce-specversion": "1.0", "ce-id": inference_id, "ce-type": kind, "ce-source": "http://localhost:9081/",
            "ce-inferenceservicename": "churn-primary", "ce-namespace": "kiln", "ce-component": "predictor",
            "ce-endpoint": "churn-primary", "content-type": "application/json"}
    if at:
        sent["ce-time"] = at
    sent.update({k.replace("_", "-"): v for k, v in headers.items()})
    data = body if isinstance(body, bytes) else httpx.Request("POST", url, json=body).content
    return httpx.post(url, content=data, headers={k: v for k, v in sent.items() if v is not None}, timeout=10)


def post_pair(url: str, request: object = ROW, response: object = ANSWER) -> str:
    """A request and its response under a new inference id, both accepted; the id."""
    inference_id = str(uuid.uuid4())
    assert event(url, REQUEST, inference_id, request).status_code == 202
    assert event(url, RESPONSE, inference_id, response).status_code == 202
    return inference_id


def wait_healthy(url: str, proc_or_name: subprocess.Popen | str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        if isinstance(proc_or_name, subprocess.Popen):
            assert proc_or_name.poll() is None, proc_or_name.stderr.read() if proc_or_name.stderr else ""
        assert time.monotonic() < deadline, f"the collector at {url} did not answer"
        time.sleep(0.2)


def captured(ws: Path, endpoint: str) -> list[dict]:
    from kiln.serving.capture import read_capture

    return list(read_capture(ws / "capture", endpoint))


@pytest.fixture
def collector(tmp_path: Path):
    ws = tmp_path / "ws"
    assert run_kiln("init", ws).code == 0
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kiln.serving.collector", "--workspace", str(ws), "--port",
                             str(port), "--pair-seconds", "1"], stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield ws, url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(20)


def test_request_and_response_events_become_one_capture_record_in_either_order(collector) -> None:
    ws, url, proc = collector
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    assert event(f"{url}/churn/primary", REQUEST, first, ROW, at="2026-12-06T10:00:00.250Z").status_code == 202
    assert event(f"{url}/churn/primary", RESPONSE, first, ANSWER, at="2026-12-06T10:00:00.262Z").status_code == 202
    # the response first, and each event twice: KServe's logger may post again; one record still
    for _ in range(2):
        assert event(f"{url}/churn/shadow?shadow=true", RESPONSE, second, ANSWER).status_code == 202
        assert event(f"{url}/churn/shadow?shadow=true", REQUEST, second, ROW).status_code == 202
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) in (0, -signal.SIGTERM)  # uvicorn raises the signal again once it has shut down
    records = {r["inference_id"]: r for r in captured(ws, "churn")}
    assert set(records) == {first, second}
    one = records[first]
    assert one["request"] == ROW and one["response"] == ANSWER and one["status"] == 200 and not one["shadow"]
    assert one["variant"] == "primary" and one["timestamp"] == "2026-12-06T10:00:00.250000+00:00"
    assert one["latency_ms"] == pytest.approx(12.0)
    assert records[second]["shadow"] and records[second]["variant"] == "shadow"


def test_a_multi_model_endpoints_records_are_filed_under_the_version_that_answered(collector) -> None:
    """`?by_model=true`, as a rendered multi-model InferenceService's logger posts: the version the response names
    (V2's model_name; Kiln's multi-model server names it on V1 too), else the path's variant."""
    ws, url, proc = collector
    v1 = post_pair(f"{url}/many/main?by_model=true", response={**ANSWER, "model_name": "churn-v4"})
    v2 = post_pair(f"{url}/many/main?by_model=true", response={"model_name": "fraud-v2", "outputs": []})
    plain = post_pair(f"{url}/many/main?by_model=true")
    odd = post_pair(f"{url}/many/main?by_model=true", response={**ANSWER, "model_name": "../x"})
    other = post_pair(f"{url}/churn/primary", response={**ANSWER, "model_name": "churn-v4"})
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)
    variants = {r["inference_id"]: r["variant"] for r in [*captured(ws, "many"), *captured(ws, "churn")]}
    assert variants == {v1: "churn-v4", v2: "fraud-v2", plain: "main", odd: "main", other: "primary"}


def test_an_unanswered_request_is_written_alone_after_the_pairing_window(collector) -> None:
    ws, url, _ = collector
    lonely = str(uuid.uuid4())
    assert event(f"{url}/churn/primary", REQUEST, lonely, ROW).status_code == 202
    deadline = time.monotonic() + 15
    while not captured(ws, "churn"):
        assert time.monotonic() < deadline, "the request was never written"
        time.sleep(0.5)
    [record] = captured(ws, "churn")
    assert record["inference_id"] == lonely and record["response"] is None and record["status"] == 0
    assert httpx.get(f"{url}/health").json()["waiting"] == 0


def test_malformed_events_get_a_4xx_naming_what_is_wrong_and_nothing_is_written(collector) -> None:
    ws, url, proc = collector
    good = f"{url}/churn/primary"
    cases = [
        (event(good, REQUEST, "a", ROW, ce_specversion=None), 400, "ce-specversion is missing"),
        (event(good, REQUEST, "a", ROW, ce_specversion="9.9"), 400, "ce-specversion '9.9'"),
        (event(good, REQUEST, "", ROW), 400, "header ce-id"),
        (event(good, REQUEST, "x" * 300, ROW), 400, "header ce-id"),
        (event(good, "com.example.other", "a", ROW), 400, "header ce-type 'com.example.other'"),
        (event(good, REQUEST, "a", ROW, ce_time="yesterday"), 400, "header ce-time 'yesterday'"),
        (event(good, REQUEST, "a", b"{not json"), 400, "the body is not JSON"),
        (event(good, REQUEST, "a", b""), 400, "the body is empty"),
        (event(f"{url}/Churn_1/primary", REQUEST, "a", ROW), 400, "endpoint 'Churn_1' in the path"),
        (event(good, REQUEST, "a", b"[" + b"1," * (9 << 20) + b"1]"), 413, "over"),
    ]
    for res, status, words in cases:
        assert res.status_code == status and words in res.json()["error"], (res.status_code, res.text, words)
    assert httpx.get(good).status_code == 405
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) in (0, -signal.SIGTERM)  # uvicorn raises the signal again once it has shut down
    assert captured(ws, "churn") == [], "nothing of a refused event is written"


@pytest.mark.slow
def test_the_collector_runs_in_the_platform_image_as_the_charts_pod(images: Images, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert run_kiln("init", ws).code == 0
    port = free_port()
    name = f"kiln-capture-{port}"
    docker("run", "-d", "--name", name, *RESTRICTED, "--user", f"{os.getuid()}:{os.getgid()}", "--tmpfs", "/tmp",
           "-e", "HOME=/tmp", "-v", f"{ws}:/kiln/workspace", images.platform, "python", "-m", "kiln.serving.collector",
           "--workspace", "/kiln/workspace", "--host", "127.0.0.1", "--port", str(port))
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, name)
        inference_id = post_pair(f"{url}/churn/primary")
        docker("stop", "-t", "20", name)  # SIGTERM: what is buffered is written before it ends
        [record] = captured(ws, "churn")
        assert record["inference_id"] == inference_id and record["response"] == ANSWER
    finally:
        docker("rm", "-f", name, check=False)
