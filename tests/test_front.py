"""The endpoint front in process: refusals answered by the one error handler, control routes, /metrics."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from kiln.serving import errors
from kiln.serving.app import answer_refused, build_app, driver_from_config, router_from_config
from kiln.serving.router import Router

DEAD = "http://127.0.0.1:9"  # the discard port: nothing answers there
CONFIG = {"endpoint": "toy", "variants": {"blue": DEAD, "green": DEAD}, "shares": {"blue": 0.9, "green": 0.1},
          "max_body_bytes": 2048}
STATUSES = {errors.RequestRefused: 400, errors.BadRequest: 400, errors.Unauthorized: 401, errors.NotFound: 404,
            errors.Conflict: 409, errors.PayloadTooLarge: 413, errors.UnsupportedMediaType: 415,
            errors.Unavailable: 503}


@pytest.fixture
def front(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, Router]]:
    monkeypatch.setenv("TOY_TOKEN", "s3cret")
    config = {**CONFIG, "token_env": "TOY_TOKEN"}
    router = router_from_config(config)
    with TestClient(build_app(router, driver_from_config(router, config))) as client:
        yield client, router


AUTH = {"authorization": "Bearer s3cret"}


def test_every_refusal_is_json_with_its_own_status() -> None:
    assert set(STATUSES) == {errors.RequestRefused, *errors.RequestRefused.__subclasses__()}, "each error is listed"
    for error, status in STATUSES.items():
        assert issubclass(error, errors.KilnError) and error.status == status
        res = asyncio.run(answer_refused(None, error(f"refused with {status}")))  # type: ignore[arg-type]
        assert res.status_code == status and json.loads(res.body) == {"error": f"refused with {status}"}
    res = asyncio.run(answer_refused(None, errors.Conflict("busy", hint="wait")))  # type: ignore[arg-type]
    assert json.loads(res.body) == {"error": "busy", "hint": "wait"}


def test_inference_refusals_reach_the_caller_with_their_status(front: tuple[TestClient, Router]) -> None:
    client, _ = front
    checks = [
        (client.post("/v1/models/toy:predict", json={}), 401, "missing or wrong bearer token"),
        (client.post("/v1/models/toy:predict", json={"pad": "x" * 3000}, headers=AUTH), 413, "limit of 2048 bytes"),
        (client.post("/v1/models/toy:predict", content=b"{}", headers={**AUTH, "content-type": "text/plain"}), 415,
         "requests are application/json"),
        (client.post("/v1/models/toy:predict", json={}, headers={**AUTH, "x-kiln-target-variant": "red"}), 404,
         "no production variant 'red'; variants: blue, green"),
        (client.post("/v1/models/other:predict", json={}, headers=AUTH), 404, "no model 'other'"),
        (client.post("/v1/models/toy:explain", json={}, headers=AUTH), 404, "use /v1/models/toy:predict"),
        (client.post("/v2/models/other/infer", json={}, headers=AUTH), 404, "no model 'other'"),
        (client.post("/v1/models/toy:predict", json={}, headers=AUTH), 503, "variant unavailable"),
    ]
    for res, status, needle in checks:
        assert res.status_code == status, res.text
        assert needle in res.json()["error"]
    assert client.get("/v2/health/live").json() == {"live": True}, "the front itself is up"
    res = client.get("/v2/health/ready")
    assert res.status_code == 503 and res.json() == {"ready": False}, "no variant answers: not ready"
    res = client.get("/v2/models/toy")
    assert res.status_code == 503 and "no production variant of this endpoint is answering" in res.json()["error"]
    assert client.get("/v2/models/other/ready").status_code == 404


def test_control_routes_refuse_with_400_404_and_409(front: tuple[TestClient, Router]) -> None:
    client, router = front
    assert client.put("/kiln/shares", content=b"[1]").status_code == 400
    res = client.put("/kiln/shares", json={"blue": 1, "red": 1})
    assert res.status_code == 400 and "unknown: ['red']" in res.json()["error"]
    assert client.put("/kiln/shares", json={"blue": "0.5", "green": 0.5}).json() == {"shares": {"blue": 0.5,
                                                                                               "green": 0.5}}
    assert router.state.shares == {"blue": 0.5, "green": 0.5}

    res = client.put("/kiln/rollout", json={"variant": "blue"})
    assert res.status_code == 400 and "candidate: Field required" in res.json()["error"]
    assert client.put("/kiln/rollout", content=b"{oops").status_code == 400
    res = client.put("/kiln/rollout", json={"variant": "red", "candidate": "red-next", "url": DEAD})
    assert res.status_code == 409 and "no production variant 'red'" in res.json()["error"]
    res = client.post("/kiln/rollout/promote")
    assert res.status_code == 409 and res.json() == {"error": "no rollout is under way"}
    assert client.post("/kiln/rollout/hurry").status_code == 404
    assert client.post("/kiln/rollout/pause").json() == {"error": "no rollout is under way"}

    began = client.put("/kiln/rollout", json={"variant": "blue", "candidate": "blue-next", "url": DEAD})
    assert began.status_code == 200, began.text
    assert list(began.json()) == ["stable", "candidate", "candidate_url", "phase", "share", "reason", "policy",
                                  "history", "done", "updated", "paused"]
    assert began.json()["phase"] == "baking" and router.state.shares["blue-next"] == pytest.approx(0.05)
    res = client.put("/kiln/rollout", json={"variant": "blue", "candidate": "blue-next", "url": DEAD})
    assert res.status_code == 409 and "is under way" in res.json()["error"]
    paused = client.post("/kiln/rollout/pause", json={"reason": "peak"})
    assert paused.json()["paused"] is True and client.post("/kiln/rollout/pause").status_code == 409
    assert client.post("/kiln/rollout/resume").json()["paused"] is False
    rolled = client.post("/kiln/rollout/rollback", json={"reason": "by test"})
    assert rolled.json()["phase"] == "rolled-back" and rolled.json()["reason"] == "by test"
    status = client.get("/kiln/status").json()
    assert status["rollout"]["phase"] == "rolled-back" and "blue-next" not in status["shares"]


def test_a_front_without_a_driver_runs_no_rollouts() -> None:
    with TestClient(build_app(router_from_config(CONFIG))) as client:
        res = client.put("/kiln/rollout", json={"variant": "blue", "candidate": "c", "url": DEAD})
        assert res.status_code == 404 and res.json() == {"error": "this front runs no rollouts"}
        assert client.get("/kiln/status").json()["rollout"] is None


def test_metrics_are_the_prometheus_text_format_per_variant(front: tuple[TestClient, Router]) -> None:
    client, router = front
    router.windows.add("blue", 12.0, False)
    router.windows.add("blue", 40.0, True)
    res = client.get("/metrics")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/plain")
    samples = {(s.name, s.labels["variant"]): s.value for f in text_string_to_metric_families(res.text)
               for s in f.samples}
    assert all(s.labels["endpoint"] == "toy" for f in text_string_to_metric_families(res.text) for s in f.samples)
    assert samples[("kiln_endpoint_share", "blue")] == 0.9 and samples[("kiln_endpoint_share", "green")] == 0.1
    assert samples[("kiln_endpoint_error_rate", "blue")] == 0.5
    assert samples[("kiln_endpoint_requests_per_second", "blue")] == pytest.approx(2 / 60)
    assert samples[("kiln_endpoint_p99_ms", "blue")] == 40.0
    assert ("kiln_endpoint_p99_ms", "green") not in samples, "no latency without answers"


class Fake(BaseHTTPRequestHandler):
    """A variant that answers with the body it got, and a feature server that knows customers 1 and 2."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/get-online-features":
            self._answer(200, {"got": body})
            return
        ids = body["entities"]["customer_id"]
        if 500 in ids or 400 in ids:
            self._answer(max(ids), {"detail": "broken"})
            return
        known = {1: 10.0, 2: 20.0}
        self._answer(200, {"metadata": {"feature_names": ["customer_id", "usage"]},
                           "results": [{"values": ids}, {"values": [known.get(i) for i in ids]}]})

    def _answer(self, status: int, doc: dict) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Fake)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_id_only_instances_get_their_features_or_a_refusal(fake: str) -> None:
    def front(features_url: str) -> TestClient:
        return TestClient(build_app(router_from_config({
            "endpoint": "toy", "variants": {"blue": fake}, "shares": {"blue": 1.0},
            "features": {"url": features_url, "service": "churn_v1", "join_key": "customer_id"}})))

    def predict(client: TestClient, instances: list) -> tuple[int, dict]:
        res = client.post("/v1/models/toy:predict", json={"instances": instances})
        return res.status_code, res.json()

    with front(fake) as client:
        assert predict(client, [{"customer_id": 1}, {"customer_id": 2}]) == \
            (200, {"got": {"instances": [{"usage": 10.0}, {"usage": 20.0}]}})
        assert predict(client, [{"customer_id": 1, "usage": 3.0}]) == \
            (200, {"got": {"instances": [{"customer_id": 1, "usage": 3.0}]}}), "full rows pass untouched"
        status, doc = predict(client, [{"customer_id": 1}, {"customer_id": 3}])
        assert status == 404 and doc["error"] == "instances[1]: no online features for customer_id 3"
        status, doc = predict(client, [{"customer_id": 1.5}])
        assert status == 400 and "must be text or an integer" in doc["error"]
        assert predict(client, [{"customer_id": 400}])[0] == 400
        assert predict(client, [{"customer_id": 500}])[0] == 503
    with front(DEAD) as client:
        status, doc = predict(client, [{"customer_id": 1}])
        assert status == 503 and "is not answering; start it with `kiln up`" in doc["error"]
