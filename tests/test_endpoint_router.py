"""The endpoint front on loopback: weighted routing, target variant, limits, shadow mirroring, capture, failover."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kiln.serving.capture import read_capture
from tests.test_serving import ROWS, model_server, start_server, train_and_register

pytestmark = pytest.mark.slow
BODY = {"instances": ROWS}


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("endpoint") / "ws"
    train_and_register(root)
    procs = {}
    urls = {}
    for variant in ("blue", "green", "shadow"):
        procs[variant], urls[variant] = model_server(root, "toy", "models:/toy@challenger", f"{variant}.log")
    config = {"endpoint": "toy", "variants": {"blue": urls["blue"], "green": urls["green"]},
              "shares": {"blue": 0.9, "green": 0.1}, "shadow": {"name": "shadow", "url": urls["shadow"]},
              "shadow_percent": 100, "max_body_bytes": 4096,
              "capture": {"root": str(root / "capture"), "sample_percent": 100, "flush_seconds": 0.2}}
    (root / "router.json").write_text(json.dumps(config))
    procs["router"], url = start_server(["kiln.serving.app", "--config", str(root / "router.json"), "--port"], root,
                                        "/v2/health/ready", "router.log")
    yield url, root, procs
    for proc in procs.values():
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
            proc.wait(30)


def post(url: str, body=BODY, **kw) -> httpx.Response:
    return httpx.post(f"{url}/v1/models/toy:predict", json=body, timeout=30, **kw)


def test_traffic_follows_the_shares_and_the_target_header(endpoint) -> None:
    url, _, _ = endpoint
    answered = [post(url).headers["x-kiln-variant"] for _ in range(300)]
    green = answered.count("green")
    assert 12 <= green <= 50, f"green answered {green} of 300 at a 10% share"
    assert set(answered) == {"blue", "green"}
    assert {post(url, headers={"x-kiln-target-variant": "green"}).headers["x-kiln-variant"] for _ in range(20)} \
        == {"green"}
    res = post(url, headers={"x-kiln-target-variant": "purple"})
    assert res.status_code == 404 and "no production variant 'purple'" in res.json()["error"]
    res = httpx.put(f"{url}/kiln/shares", json={"blue": 0, "green": 1}, timeout=10)
    assert res.status_code == 200
    assert {post(url).headers["x-kiln-variant"] for _ in range(30)} == {"green"}
    httpx.put(f"{url}/kiln/shares", json={"blue": 0.9, "green": 0.1}, timeout=10)


def test_bad_requests_are_4xx_with_a_json_message(endpoint) -> None:
    url, _, _ = endpoint
    big = {"instances": [ROWS[0]] * 200}
    checks = [
        (post(url, big), 413, "over the limit of 4096 bytes"),
        (httpx.post(f"{url}/v1/models/toy:predict", content=b"{oops", timeout=10,
                    headers={"content-type": "application/json"}), 400, "Unrecognized request format"),
        (post(url, {"instances": [{"calls": 1}]}), 400, "missing feature(s)"),
        (httpx.post(f"{url}/v1/models/other:predict", json=BODY, timeout=10), 404, "no model 'other'"),
        (httpx.post(f"{url}/v2/models/toy/infer", json={"inputs": "x"}, timeout=10), 422,
         "InferenceRequest.inputs: Input should be a valid list"),
    ]
    for res, status, needle in checks:
        assert res.status_code == status, res.text
        assert needle in res.json()["error"]


def test_shadow_answers_are_captured_beside_production_and_a_hung_shadow_adds_no_latency(endpoint) -> None:
    url, root, procs = endpoint
    ids = [post(url).headers["x-kiln-inference-id"] for _ in range(20)]
    deadline = time.monotonic() + 30  # capture is flushed every 0.2 s, the shadow's copies sent every 50 ms
    while True:
        records = [r for r in read_capture(root / "capture", "toy") if r["inference_id"] in ids]
        if len(records) >= 2 * len(ids) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    production = {r["inference_id"]: r for r in records if not r["shadow"]}
    shadow = {r["inference_id"]: r for r in records if r["shadow"]}
    assert set(production) == set(ids) and set(shadow) == set(ids)
    one = ids[0]
    assert shadow[one]["variant"] == "shadow" and production[one]["variant"] in ("blue", "green")
    assert shadow[one]["request"] == production[one]["request"] == BODY
    assert shadow[one]["response"] == production[one]["response"], "same model: same answers"

    os.kill(procs["shadow"].pid, signal.SIGSTOP)  # the shadow hangs: accepts, never answers
    try:
        latencies = []
        for _ in range(30):
            t0 = time.perf_counter()
            assert post(url).status_code == 200
            latencies.append(time.perf_counter() - t0)
        assert max(latencies) < 1.0, f"a hung shadow slowed callers: {max(latencies):.2f} s"
    finally:
        os.kill(procs["shadow"].pid, signal.SIGCONT)


FEATURES = {"calls": "number", "tenure": "number", "plan": "text"}
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=8)
WRONG = {"number": JSON.filter(lambda v: v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))),
         "text": JSON.filter(lambda v: v is not None and not isinstance(v, str))}


@st.composite
def malformed(draw) -> tuple[str, bytes, dict[str, str]]:
    """One request that must be refused: (path, body, headers), built by breaking a valid request in one way."""
    path, headers = "/v1/models/toy:predict", {"content-type": "application/json"}
    rows = [dict(r) for r in ROWS]
    row = draw(st.sampled_from(rows))
    kind = draw(st.sampled_from(["not-json", "not-object", "no-instances", "instances-not-list", "bad-instance",
                                 "missing", "extra", "wrong-type", "short-list-row", "too-many", "v2",
                                 "content-type", "unknown-model", "unknown-variant", "oversize"]))
    body: object = {"instances": rows}
    if kind == "not-json":
        raw = draw(st.binary(min_size=1, max_size=64))
        assume(not _parses(raw))
        return path, raw, headers
    if kind == "not-object":
        body = draw(JSON.filter(lambda v: not isinstance(v, dict)))
    elif kind == "no-instances":
        body = draw(st.dictionaries(st.text(max_size=8).filter(lambda k: k not in ("instances", "inputs")), JSON,
                                    max_size=3))
    elif kind == "instances-not-list":
        body = {"instances": draw(JSON.filter(lambda v: not isinstance(v, list) or v == []))}
    elif kind == "bad-instance":
        rows[0] = draw(JSON.filter(lambda v: not isinstance(v, (dict, list))))
    elif kind == "missing":
        row.pop(draw(st.sampled_from(sorted(FEATURES))))
    elif kind == "extra":
        row[draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in FEATURES))] = draw(JSON)
    elif kind == "wrong-type":
        name = draw(st.sampled_from(sorted(FEATURES)))
        row[name] = draw(WRONG[FEATURES[name]])
    elif kind == "short-list-row":
        rows[0] = draw(st.lists(st.floats(allow_nan=False), max_size=2))
    elif kind == "too-many":
        body = {"instances": [ROWS[0]] * 1001}
        headers = {**headers, "x-kiln-target-variant": "green"}
    elif kind == "v2":
        path = "/v2/models/toy/infer"
        body = {"inputs": draw(st.one_of(JSON.filter(lambda v: not isinstance(v, list)), st.lists(
            st.fixed_dictionaries({"name": st.sampled_from([*FEATURES, "age"]), "shape": JSON, "datatype": JSON,
                                   "data": JSON}), min_size=1, max_size=3)))}
    elif kind == "content-type":
        headers = {"content-type": draw(st.sampled_from(["text/plain", "application/xml", "multipart/form-data",
                                                          "application/x-www-form-urlencoded"]))}
    elif kind == "unknown-model":
        path = f"/v1/models/{draw(st.from_regex(r'[a-z]{1,10}', fullmatch=True).filter(lambda n: n != 'toy'))}:predict"
    elif kind == "unknown-variant":
        headers = {**headers, "x-kiln-target-variant": draw(st.text(
            alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=10).filter(lambda v: v not in VARIANTS))}
    elif kind == "oversize":
        body = {"instances": rows, "pad": "x" * draw(st.integers(4100, 20000))}
    return path, json.dumps(body).encode(), headers


def _parses(raw: bytes) -> bool:
    try:
        json.loads(raw)
        return True
    except ValueError:
        return False


VARIANTS = ("blue", "green")


def test_a_thousand_malformed_requests_all_get_4xx_with_a_json_message(endpoint) -> None:
    url, _, procs = endpoint
    sent: list[tuple[int, str]] = []
    with httpx.Client(base_url=url, timeout=30) as client:

        @settings(max_examples=1000, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(malformed())
        def refused(request: tuple[str, bytes, dict[str, str]]) -> None:
            path, body, headers = request
            res = client.post(path, content=body, headers=headers)
            sent.append((res.status_code, path))
            assert 400 <= res.status_code < 500, (res.status_code, path, body[:300], headers, res.text[:300])
            assert isinstance(res.json().get("error"), str) and res.json()["error"], res.text[:300]

        refused()
        assert len(sent) >= 1000, f"only {len(sent)} requests were sent"
        assert client.post("/v1/models/toy:predict", json=BODY).status_code == 200
    assert all(proc.poll() is None for proc in procs.values()), "a server died under malformed requests"


def test_killing_a_variant_under_load_keeps_the_endpoint_answering(endpoint) -> None:
    url, root, procs = endpoint
    statuses = []
    for i in range(120):
        if i == 40:
            procs["blue"].kill()
            procs["blue"].wait()
        statuses.append(post(url).status_code)
    assert statuses.count(200) == 120, f"non-200 answers: {[s for s in statuses if s != 200]}"
    status = httpx.get(f"{url}/kiln/status", timeout=10).json()
    assert status["variants"]["blue"]["errors"] >= 1
    time.sleep(0.5)
    assert all(isinstance(r["status"], int) for r in read_capture(root / "capture", "toy"))
