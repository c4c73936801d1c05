"""Asynchronous endpoints on the machine's RabbitMQ: a request is stored and answered at once with its id; workers
started by the backlog score it (V1 JSON, CSV, JSON lines) and write its result once, the same answers the model
gives; a bad request gets an error outcome naming what is wrong, and the webhooks hear of both; a worker killed
mid-request loses nothing; workers go down to zero once the queue is empty."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from kiln.process import pid_file
from tests.conftest import run_kiln
from tests.test_serving import serving_workspace

pytestmark = pytest.mark.slow
COLUMNS = ("calls", "tenure", "plan")


def kiln(root: Path, *args: str | Path, code: int = 0) -> dict:
    res = run_kiln(*args, "-w", root, "--json", timeout=600)
    assert res.code == code, res.stderr[-3000:]
    return json.loads(res.stdout)


def rows(n: int) -> list[dict]:
    return [{"calls": i % 9, "tenure": 3.0 + (i * 7) % 500, "plan": ("basic", "pro")[i % 2]} for i in range(n)]


def csv_text(data: list[dict]) -> str:
    return ",".join(COLUMNS) + "\n" + "".join(f"{r['calls']},{r['tenure']},{r['plan']}\n" for r in data)


class Hooks(ThreadingHTTPServer):
    """The webhooks' receiver: every JSON body POSTed, by path."""

    def __init__(self) -> None:
        self.got: dict[str, list[dict]] = {"/ok": [], "/failed": []}

        class Handler(BaseHTTPRequestHandler):
            def do_POST(handler) -> None:
                body = handler.rfile.read(int(handler.headers["content-length"]))
                self.got.setdefault(handler.path, []).append(json.loads(body))
                handler.send_response(204)
                handler.end_headers()

            def log_message(handler, *args: object) -> None:
                return

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture(scope="module")
def hooks():
    server = Hooks()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory, hooks: Hooks):
    """`toy` deployed in mode async: no worker until a request waits, at most 2, down to none 3 s after the last."""
    root = serving_workspace(tmp_path_factory.mktemp("async") / "ws")
    (root / "async.yaml").write_text(json.dumps({
        "name": "toy", "mode": "async", "variants": [{"name": "main", "model": "models:/toy/1"}],
        "capture": {"flush_seconds": 0.5},
        "async_inference": {"max_payload_mb": 4, "max_deliveries": 2,
                            "notify": {"success_url": hooks.url("/ok"), "error_url": hooks.url("/failed")},
                            "workers": {"min": 0, "max": 2, "backlog_per_worker": 10, "idle_seconds": 3}}}))
    deployed = kiln(root, "endpoint", "deploy", root / "async.yaml")
    try:
        yield root, deployed["url"]
    finally:
        run_kiln("endpoint", "delete", "toy", "-w", root)


def status(url: str) -> dict:
    return httpx.get(f"{url}/kiln/status", timeout=10).json()


def expected(root: Path, data: list[dict]) -> list[float]:
    import mlflow.pyfunc
    import pandas as pd

    mlflow.set_tracking_uri(f"sqlite:///{root}/models/mlflow.db")
    frame = pd.DataFrame(data).astype({"calls": "float64"})
    return mlflow.pyfunc.load_model("models:/toy/1").predict(frame)["probability"].tolist()


def test_requests_in_each_format_are_answered_later_with_the_models_answers(endpoint, hooks: Hooks) -> None:
    root, url = endpoint
    data = rows(2500)  # more than one chunk of rows
    (root / "rows.csv").write_text(csv_text(data))
    (root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data[:300]))
    (root / "rows.json").write_text(json.dumps({"instances": data[:5]}))
    assert status(url)["workers"] == 0, "no worker while nothing waits"
    queued = {name: kiln(root, "endpoint", "invoke", "toy", "--async", "-d", f"@{root / name}")
              for name in ("rows.csv", "rows.jsonl", "rows.json")}
    assert {q["status"] for q in queued.values()} == {"pending"}
    want = expected(root, data)
    for name, q in queued.items():
        done = kiln(root, "endpoint", "result", q["inference_id"], "--wait", "180", "-o", root / f"{name}.out")
        assert done["status"] == "done" and Path(done["output_location"]).is_file(), done
        text = (root / f"{name}.out").read_text()
        got = [p["probability"] for p in (json.loads(text)["predictions"] if name.endswith(".json") else
                                           map(json.loads, text.splitlines()))]
        assert got == pytest.approx(want[:len(got)], abs=1e-9) and len(got) == {"rows.csv": 2500, "rows.jsonl": 300,
                                                                                "rows.json": 5}[name]
    ids = {q["inference_id"] for q in queued.values()}
    deadline = time.monotonic() + 30
    while {h["inference_id"] for h in hooks.got["/ok"]} < ids and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ids <= {h["inference_id"] for h in hooks.got["/ok"]}, "the success webhook heard of each"
    from kiln.serving.capture import read_capture

    deadline = time.monotonic() + 10
    captured: list = []
    while len(captured) < 5 and time.monotonic() < deadline:  # 3 + 1 + 1 chunks
        captured = list(read_capture(root / "capture", "toy"))
        time.sleep(0.5)
    assert sum(len(r["request"]["instances"]) for r in captured) == 2805, \
        "every chunk scored is captured, for the monitors"


def test_a_v2_request_is_answered_in_v2_in_chunks(endpoint) -> None:
    """The Open Inference Protocol's JSON at the V2 path: queued like any request, scored in chunks, answered as one
    V2 response holding every row; a malformed one fails naming the input."""
    root, url = endpoint
    data = rows(1500)  # two chunks
    inputs = [{"name": "calls", "shape": [1500], "datatype": "INT64", "data": [r["calls"] for r in data]},
              {"name": "tenure", "shape": [1500, 1], "datatype": "FP64", "data": [[r["tenure"]] for r in data]},
              {"name": "plan", "shape": [1500], "datatype": "BYTES", "data": [r["plan"] for r in data]}]
    queued = httpx.post(f"{url}/v2/models/toy/infer", json={"inputs": inputs}, timeout=30)
    assert queued.status_code == 202, queued.text
    done = kiln(root, "endpoint", "result", queued.json()["inference_id"], "--wait", "180", "-o", root / "v2.json")
    assert done["status"] == "done", done
    answer = json.loads((root / "v2.json").read_text())
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert answer["model_name"] == "toy" and outputs["probability"]["shape"] == [1500]
    assert outputs["probability"]["data"] == pytest.approx(expected(root, data), abs=1e-9)

    torn = [*inputs[:2], {**inputs[2], "shape": [1499]}]
    queued = httpx.post(f"{url}/v2/models/toy/infer", json={"inputs": torn}, timeout=30)
    failed = kiln(root, "endpoint", "result", queued.json()["inference_id"], "--wait", "180", code=1)
    assert "input 'plan': shape [1499] holds 1499 values, data has 1500" in failed["error"], failed


def test_a_bad_request_is_refused_or_fails_naming_what_is_wrong(endpoint, hooks: Hooks) -> None:
    root, url = endpoint
    predict = f"{url}/v1/models/toy:predict"
    refused = httpx.post(predict, content=b"a,b", headers={"content-type": "text/plain"}, timeout=10)
    assert refused.status_code == 415 and "text/csv" in refused.json()["error"]
    big = httpx.post(predict, content=b"x" * (5 * 2**20), headers={"content-type": "text/csv"}, timeout=30)
    assert big.status_code == 413 and "max_payload_mb" in big.json()["error"]
    assert httpx.post(predict, content=b"", headers={"content-type": "text/csv"}, timeout=10).status_code == 400
    assert not [p for p in (root / "async").iterdir() if not p.name.startswith(".") and
                not (p / "request.json").exists()], "a refused request leaves nothing in the store"

    bad = rows(1200)
    bad[1100]["tenure"] = "long"  # the second chunk holds it
    (root / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bad))
    q = kiln(root, "endpoint", "invoke", "toy", "--async", "-d", f"@{root / 'bad.jsonl'}")
    failed = kiln(root, "endpoint", "result", q["inference_id"], "--wait", "180", code=1)
    assert failed["status"] == "failed" and "rows 1001-1200" in failed["error"] and "tenure" in failed["error"], failed
    (root / "torn.jsonl").write_text('{"calls": 1, "tenure": 2.0, "plan": "basic"}\n{"calls": \n')
    q2 = kiln(root, "endpoint", "invoke", "toy", "--async", "-d", f"@{root / 'torn.jsonl'}")
    torn = kiln(root, "endpoint", "result", q2["inference_id"], "--wait", "180", code=1)
    assert "line 2: not JSON" in torn["error"], torn
    deadline, ids = time.monotonic() + 30, {q["inference_id"], q2["inference_id"]}
    while not ids <= {h["inference_id"] for h in hooks.got["/failed"]} and time.monotonic() < deadline:
        time.sleep(0.2)  # (other tests' failures are heard here too)
    assert ids <= {h["inference_id"] for h in hooks.got["/failed"]}, "the error webhook heard of each"
    unknown = run_kiln("endpoint", "result", "f" * 32, "-w", root)
    assert unknown.code != 0 and "no asynchronous request" in unknown.stderr


def test_a_worker_killed_mid_request_loses_nothing_and_workers_go_down_to_zero(endpoint) -> None:
    root, url = endpoint
    (root / "many.csv").write_text(csv_text(rows(200_000)))  # 3 MB: long enough to be caught at it (seconds)
    q = kiln(root, "endpoint", "invoke", "toy", "--async", "-d", f"@{root / 'many.csv'}")
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline:
        for index in range(2):  # the worker holding it, once one does
            record = pid_file(root / ".kiln", f"endpoint-toy-worker-{index}")
            try:
                worker = json.loads(record.read_text())
                if httpx.get(f"http://127.0.0.1:{worker['port']}/health", timeout=2).json()["busy"]:
                    os.kill(worker["pid"], signal.SIGKILL)
                    killed = worker["pid"]
                    break
            except (OSError, ValueError, httpx.HTTPError):
                continue
        time.sleep(0.05)
    assert killed is not None, "a worker took the request"
    done = kiln(root, "endpoint", "result", q["inference_id"], "--wait", "180", "-o", root / "many.out")
    assert done["status"] == "done", done
    assert sum(1 for _ in (root / "many.out").open()) == 200_000
    assert (root / "async" / q["inference_id"] / "deliveries").read_text() == "2", "delivered again, answered once"

    deadline = time.monotonic() + 60
    while status(url)["workers"] and time.monotonic() < deadline:
        time.sleep(0.5)
    s = status(url)
    assert s["workers"] == 0 and s["backlog"] == 0, s
    assert s["scaling"]["stopped"] >= 1


def test_studio_shows_the_queue_of_an_asynchronous_endpoint(endpoint) -> None:
    import asyncio

    from kiln.studio.endpoints import endpoints_page
    from kiln.workspace import open_workspace

    root, _ = endpoint
    [row] = asyncio.run(endpoints_page(open_workspace(root))).endpoints
    assert row.answering and row.queue is not None and row.queue.startswith("asynchronous: 0 waiting"), row
    assert [v.share for v in row.variants] == [None], "no traffic shares: requests queue"


def test_deleting_an_endpoint_answers_every_request_still_waiting(endpoint) -> None:
    root, _ = endpoint
    (root / "later.yaml").write_text(json.dumps({
        "name": "later", "mode": "async", "variants": [{"name": "main", "model": "models:/toy/1"}],
        "capture": {"enabled": False}, "async_inference": {"workers": {"min": 0, "max": 1}}}))
    url = kiln(root, "endpoint", "deploy", root / "later.yaml")["url"]
    try:  # sent at once and deleted at once: no worker has loaded the model by then (that takes seconds)
        ids = [httpx.post(f"{url}/v1/models/later:predict", json={"instances": rows(3)}, timeout=10).json()[
            "inference_id"] for _ in range(10)]
    finally:
        assert run_kiln("endpoint", "delete", "later", "-w", root).code == 0
    outcomes = [json.loads(run_kiln("endpoint", "result", i, "-w", root, "--json").stdout) for i in ids]
    assert all(o["status"] in ("done", "failed") for o in outcomes), "none left pending"
    failed = [o for o in outcomes if o["status"] == "failed"]
    assert failed and all("was deleted before a worker answered it" in o["error"] for o in failed), outcomes
