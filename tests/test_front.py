"""The endpoint front in process: refusals answered by the one error handler, control routes, /metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

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
    assert client.get("/v2/health/ready").json() == {"ready": True, "endpoint": "toy"}


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
    assert client.post("/kiln/rollout/pause").status_code == 404

    began = client.put("/kiln/rollout", json={"variant": "blue", "candidate": "blue-next", "url": DEAD})
    assert began.status_code == 200, began.text
    assert list(began.json()) == ["stable", "candidate", "candidate_url", "phase", "share", "reason", "policy",
                                  "history", "done", "updated"]
    assert began.json()["phase"] == "baking" and router.state.shares["blue-next"] == pytest.approx(0.05)
    res = client.put("/kiln/rollout", json={"variant": "blue", "candidate": "blue-next", "url": DEAD})
    assert res.status_code == 409 and "is under way" in res.json()["error"]
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
