"""Scale to zero on a local endpoint: a variant with `min_replicas: 0` has its model server stopped after its idle
time and started again by the next request, which waits and is answered as before; requests arriving meanwhile wait
for the same start. A variant without it keeps running."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from kiln.process import running
from tests.conftest import run_kiln
from tests.test_serving import ROWS, serving_workspace

pytestmark = pytest.mark.slow


def test_an_idle_variant_stops_and_the_next_requests_wait_for_it(tmp_path: Path) -> None:
    root = serving_workspace(tmp_path / "ws")
    (root / "spec.yaml").write_text(json.dumps({
        "name": "toy", "capture": {"enabled": False},
        "variants": [{"name": "lazy", "model": "models:/toy/1", "min_replicas": 0, "idle_seconds": 2, "weight": 1},
                     {"name": "busy", "model": "models:/toy/1", "weight": 0}]}))
    res = run_kiln("endpoint", "deploy", root / "spec.yaml", "-w", root, "--json", timeout=600)
    assert res.code == 0, res.stderr[-3000:]
    url = json.loads(res.stdout)["url"]
    predict = f"{url}/v1/models/toy:predict"
    state = root / ".kiln"
    try:
        first = httpx.post(predict, json={"instances": ROWS}, timeout=60)
        assert first.status_code == 200 and first.headers["x-kiln-variant"] == "lazy"
        deadline = time.monotonic() + 60
        while running(state, "endpoint-toy-lazy") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not running(state, "endpoint-toy-lazy"), "stopped after 2 s without a request"
        assert running(state, "endpoint-toy-busy"), "a variant without min_replicas 0 keeps running"
        asleep = httpx.get(f"{url}/kiln/status", timeout=10).json()["sleepers"]["lazy"]
        assert asleep["awake"] is False

        answers: list[httpx.Response] = []
        threads = [threading.Thread(target=lambda: answers.append(
            httpx.post(predict, json={"instances": ROWS}, timeout=120))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
        assert all(a.json() == first.json() for a in answers), "answered as before it slept"
        sleeper = httpx.get(f"{url}/kiln/status", timeout=10).json()["sleepers"]["lazy"]
        assert sleeper["wakes"] == asleep["wakes"] + 1, "one start for the four waiting requests"
        assert sleeper["last_wake_seconds"] > 0
    finally:
        run_kiln("endpoint", "delete", "toy", "-w", root)


def test_min_replicas_and_idle_seconds_are_checked_by_field(tmp_path: Path) -> None:
    from kiln.errors import InputError
    from kiln.serving.spec import parse_spec

    with pytest.raises(InputError, match=r"variants\.0\.min_replicas"):
        parse_spec({"name": "toy", "variants": [{"name": "a", "model": "models:/toy/1", "min_replicas": -1}]})
    with pytest.raises(InputError, match=r"variants\.0\.idle_seconds"):
        parse_spec({"name": "toy", "variants": [{"name": "a", "model": "models:/toy/1", "idle_seconds": 0}]})
