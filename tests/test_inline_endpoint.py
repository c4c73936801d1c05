"""Inline production variants (an endpoint spec's `inline: true`): served inside the front's own process, they
answer as a variant's own server does; a model failing there fails only its own requests; a rollout's candidate
still gets a process of its own, and keeps it once promoted."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from kiln.serving.capture import read_capture
from tests.conftest import run_kiln
from tests.test_endpoint_rollout import load, register_faulty
from tests.test_serving import ROWS, approve, serving_workspace

pytestmark = pytest.mark.slow
V2 = {"inputs": [{"name": "calls", "shape": [2], "datatype": "FP64", "data": [5.0, 0.0]},
                 {"name": "tenure", "shape": [2], "datatype": "FP64", "data": [40.0, 900.0]},
                 {"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["basic", "pro"]}]}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory):
    root = serving_workspace(tmp_path_factory.mktemp("inline") / "ws")
    deployed: list[str] = []
    yield root, deployed
    for name in deployed:
        run_kiln("endpoint", "delete", name, "-w", root)


def deploy(root: Path, deployed: list[str], spec: dict) -> str:
    """`kiln endpoint deploy` of ``spec``; the front's URL."""
    (root / f"{spec['name']}.json").write_text(json.dumps(spec))
    res = run_kiln("endpoint", "deploy", root / f"{spec['name']}.json", "-w", root, "--json", timeout=600)
    assert res.code == 0, res.stderr[-3000:]
    deployed.append(spec["name"])
    return json.loads(res.stdout)["url"]


def status(root: Path, name: str) -> dict:
    res = run_kiln("endpoint", "status", name, "-w", root, "--json")
    assert res.code == 0, res.stderr[-2000:]
    return json.loads(res.stdout)


def test_inline_variants_answer_as_their_own_servers_do(root) -> None:
    root, deployed = root
    variant = {"model": "models:/toy/1"}
    apart = deploy(root, deployed, {"name": "apart", "variants": [{"name": "main", **variant}]})
    inline = deploy(root, deployed, {
        "name": "inl", "inline": True, "capture": {"flush_seconds": 0.2},
        "variants": [{"name": "blue", "weight": 9, **variant}, {"name": "green", "weight": 1, **variant}],
        "shadow": {"name": "dark", "sample_percent": 100, **variant}})
    # Only the shadow has a process of its own besides the front, and it yields the cores to the callers' requests.
    state = status(root, "inl")
    assert state["processes"] == {"endpoint-inl": "running", "endpoint-inl-dark": "running"}
    port = str(state["variants"]["dark"]["port"])
    [shadow] = [p for p in psutil.process_iter(["cmdline"]) if "kiln.serving.server" in (p.info["cmdline"] or [])
                and p.info["cmdline"][p.info["cmdline"].index("--http-port") + 1] == port]
    assert shadow.nice() == 10

    def both(method: str, path: str, **kw) -> tuple[httpx.Response, httpx.Response]:
        a, b = (httpx.request(method, f"{url}{path.format(name=name)}", timeout=30, **kw)
                for url, name in ((apart, "apart"), (inline, "inl")))
        return a, b

    want = httpx.post(f"{apart}/v1/models/apart:predict", json={"instances": ROWS}, timeout=30).json()
    for target in ("blue", "green"):  # each production variant, named by the caller
        res = httpx.post(f"{inline}/v1/models/inl:predict", json={"instances": ROWS}, timeout=30,
                         headers={"x-kiln-target-variant": target})
        assert res.status_code == 200 and res.headers["x-kiln-variant"] == target, res.text
        assert res.json() == want
    a, b = both("POST", "/v2/models/{name}/infer", json=V2)
    assert a.status_code == b.status_code == 200, b.text
    assert b.json()["outputs"] == a.json()["outputs"] and b.json()["model_name"] == "inl"
    a, b = both("GET", "/v2/models/{name}")
    assert (a.json()["inputs"], a.json()["outputs"]) == (b.json()["inputs"], b.json()["outputs"])
    a, b = both("GET", "/v2/models/{name}/ready")
    assert a.status_code == b.status_code == 200
    for bad, needle in [({"instances": [{**ROWS[0], "calls": "many"}]}, "instances[0].calls must be a number"),
                        ({"instances": [{"calls": 1, "tenure": 3.0}]}, "missing feature(s) plan")]:
        a, b = both("POST", "/v1/models/{name}:predict", json=bad)
        assert a.status_code == b.status_code == 400 and needle in b.json()["error"], b.text
        assert a.json()["error"] == b.json()["error"]

    # Every answer the callers got is captured once, beside the shadow's answer to it.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        records = list(read_capture(root / "capture", "inl"))
        if len([r for r in records if r["shadow"]]) >= 5:
            break
        time.sleep(0.3)
    production = [r for r in records if not r["shadow"]]
    answered = [r["variant"] for r in production if r["status"] == 200]  # two named, one drawn by share
    assert len(answered) == 3 and {"blue", "green"} <= set(answered), answered
    assert {r["inference_id"] for r in records if r["shadow"]} == {r["inference_id"] for r in production}


def test_a_model_failing_inline_fails_only_its_own_requests(root) -> None:
    root, deployed = root
    faulty = register_faulty(root, "fail")  # every second request raises inside the model
    url = deploy(root, deployed, {"name": "inlfail", "inline": True, "variants": [
        {"name": "good", "model": "models:/toy/1"}, {"name": "bad", "model": faulty}]})
    answers = []
    for _ in range(40):
        res = httpx.post(f"{url}/v1/models/inlfail:predict", json={"instances": ROWS}, timeout=30)
        answers.append((res.headers["x-kiln-variant"], res.status_code))
        if res.status_code != 200:
            assert "injected fault" in res.json()["error"], res.text
    assert {s for v, s in answers if v == "good"} == {200}
    assert {s for v, s in answers if v == "bad"} == {200, 500}
    live = status(root, "inlfail")["live"]["variants"]
    assert live["bad"]["errors"] >= 1 and live["good"]["errors"] == 0
    assert httpx.get(f"{url}/v2/health/ready", timeout=10).status_code == 200, "the front kept serving"


def test_an_inline_variants_successor_is_promoted_into_its_own_process(root) -> None:
    root, deployed = root
    (root / "inlroll.yaml").write_text("""
name: inlroll
inline: true
variants: [{name: main, model: "models:/toy/1"}]
policy: {type: canary, step_percent: 50, bake_seconds: 6}
guardrails: {min_requests: 5, max_error_rate: 0.05, max_p99_increase_ms: 150}
""")
    res = run_kiln("endpoint", "deploy", root / "inlroll.yaml", "-w", root, "--json")
    assert res.code == 0, res.stderr[-3000:]
    deployed.append("inlroll")
    url = f"{json.loads(res.stdout)['url']}/v1/models/inlroll:predict"
    assert list(status(root, "inlroll")["processes"]) == ["endpoint-inlroll"]
    res = run_kiln("train", "-t", root / "train.parquet", "-f", "lgbm", "--iterations", "4", "-w", root, "--json")
    res = run_kiln("models", "register", json.loads(res.stdout)["run_id"], "--name", "toy", "-w", root, "--json")
    new = f"toy/{json.loads(res.stdout)['version']['version']}"
    approve(root, new)
    answers: list = []
    done = threading.Event()
    thread = load(url, answers, until=done)
    res = run_kiln("endpoint", "update", "inlroll", "--model", f"models:/{new}", "-w", root, "--json", timeout=300)
    done.set()
    thread.join()
    assert res.code == 0, res.stderr[-3000:]
    assert json.loads(res.stdout)["phase"] == "promoted"
    assert {v for _, v in answers} >= {"main", "main-next"} and all(s == 200 for s, _ in answers)
    state = status(root, "inlroll")
    assert state["variants"]["main"]["model"] == f"models:/{new}" and not state["variants"]["main"]["inline"]
    assert state["processes"] == {"endpoint-inlroll": "running", "endpoint-inlroll-main": "running"}
    after = httpx.post(url, json={"instances": ROWS}, timeout=30)
    assert after.status_code == 200 and after.headers["x-kiln-variant"] == "main"


@pytest.mark.parametrize("spec, needle", [
    ({"mode": "async"}, "inline is for realtime endpoints"),
    ({"variants": [{"name": "main", "model": "models:/toy/1", "min_replicas": 0}]},
     "variants[0].min_replicas is 0"),
])
def test_an_inline_spec_that_cannot_run_is_refused_naming_why(root, spec: dict, needle: str) -> None:
    root, _ = root
    body = {"name": "nope", "inline": True, "variants": [{"name": "main", "model": "models:/toy/1"}], **spec}
    (root / "nope.json").write_text(json.dumps(body))
    res = run_kiln("endpoint", "deploy", root / "nope.json", "-w", root)
    assert res.code != 0 and needle in res.stderr, res.stderr[-2000:]
    assert "nope" not in run_kiln("endpoint", "list", "-w", root).stdout


def test_a_killed_tap_is_started_again_and_the_front_keeps_answering(root) -> None:
    root, deployed = root
    url = deploy(root, deployed, {"name": "inltap", "inline": True, "capture": {"flush_seconds": 0.2},
                                  "variants": [{"name": "main", "model": "models:/toy/1"}],
                                  "shadow": {"name": "dark", "model": "models:/toy/1", "sample_percent": 100}})
    config = str(root / ".kiln" / "endpoints" / "inltap" / "router.json")

    def taps() -> list[psutil.Process]:
        return [p for p in psutil.process_iter(["cmdline"]) if "kiln.serving.tap" in (p.info["cmdline"] or [])
                and config in p.info["cmdline"]]

    [tap] = taps()
    assert tap.nice() == 10, "the tap yields the cores to the callers' requests"
    ids = []
    with httpx.Client(timeout=30) as client:
        for i in range(120):
            if i == 40:
                tap.kill()
            res = client.post(f"{url}/v1/models/inltap:predict", json={"instances": ROWS})
            assert res.status_code == 200, res.text
            ids.append(res.headers["x-kiln-inference-id"])
            time.sleep(0.02)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (taps() and taps()[0].pid != tap.pid):
            time.sleep(0.2)
        [again] = taps()
        assert again.pid != tap.pid, "the front started its tap again"
        time.sleep(1.5)  # the new tap is up: what is sent now is captured and mirrored again
        after = [client.post(f"{url}/v1/models/inltap:predict", json={"instances": ROWS}).headers["x-kiln-inference-id"]
                 for _ in range(10)]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        records = list(read_capture(root / "capture", "inltap"))
        if {r["inference_id"] for r in records if r["shadow"]} >= set(after):
            break
        time.sleep(0.3)
    production = [r["inference_id"] for r in records if not r["shadow"]]
    assert len(production) == len(set(production)), "no request is captured twice"
    assert set(after) <= set(production) and set(ids[:30]) <= set(production)
    assert {r["inference_id"] for r in records if r["shadow"]} >= set(after)
    # Lost: what the killed tap held (its last flush's worth, 0.2 s) and what came while it was down, counted.
    missing = set(ids) - set(production)
    assert missing <= set(ids[30:]), "nothing answered well before the kill was lost"
    assert status(root, "inltap")["live"]["capture"]["dropped"] >= 1
