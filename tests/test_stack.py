"""`kiln up` / `status` / `down`: a real MLflow server on loopback, idempotent, and a clear error on a taken port."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import run_kiln

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Endpoint ports count up from `serving.base_port`; a base the kernel handed out lies in its ephemeral range (32768 up),
# where another worker's client connection or bind(0) can take a port between the scan and the server's bind. Bases
# are therefore below that range, 5,000 ports a pytest worker, 50 a workspace.
_BASES = itertools.count(21000 + 5000 * int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")), 50)


def serving_base_port() -> int:
    """A `serving.base_port` no other workspace of this run scans from, outside the kernel's ephemeral ports."""
    return next(_BASES)


def free_ports(count: int) -> list[int]:
    """``count`` different free ports: each socket is held until all are bound (a port free_port() gave back can
    come again from the next call)."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


def make_workspace(root: Path, port: int, features_port: int | None = None) -> Path:
    assert run_kiln("init", root).code == 0
    text = (root / "kiln.yaml").read_text().replace("port: 5000", f"port: {port}")
    text = text.replace("port: 6566", f"port: {features_port or free_port()}")
    text = text.replace("port: 6580", f"port: {free_port()}")
    text = text.replace("port: 8000", f"port: {free_port()}").replace("port: 8070", f"port: {free_port()}")
    (root / "kiln.yaml").write_text(text)
    return root


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Path]:
    ws = make_workspace(tmp_path / "ws", free_port())
    yield ws
    run_kiln("down", "-w", ws)


def services(res_stdout: str) -> dict[str, dict[str, object]]:
    return {s["name"]: s for s in json.loads(res_stdout)["services"]}


def test_up_status_down(workspace: Path) -> None:
    res = run_kiln("up", "-w", workspace, "--json")
    assert res.code == 0, res.stderr
    mlflow = services(res.stdout)["mlflow"]
    assert mlflow["state"] == "running"
    url = str(mlflow["url"])
    assert httpx.get(url + "/health", timeout=5).status_code == 200
    assert httpx.get(url + "/", timeout=10).status_code == 200  # the UI
    assert (workspace / ".kiln" / "run" / "mlflow.pid").is_file()
    assert (workspace / ".kiln" / "logs" / "mlflow.log").stat().st_size > 0

    again = run_kiln("up", "-w", workspace, "--json")
    assert again.code == 0 and "already running" in again.stderr
    assert services(again.stdout)["mlflow"]["pid"] == mlflow["pid"]

    features = services(res.stdout)["features"]
    assert features["state"] == "running"
    assert httpx.get(str(features["url"]) + "/health", timeout=5).status_code == 200
    artifacts = services(res.stdout)["artifacts"]
    assert httpx.get(str(artifacts["url"]) + "/v1/targets/x86_64/latest", timeout=5).status_code == 404  # none yet
    evidently = services(res.stdout)["evidently"]
    assert httpx.get(str(evidently["url"]) + "/api/projects", timeout=5).json() == []  # no monitor run yet
    studio = services(res.stdout)["studio"]
    assert "No registered model yet" in httpx.get(str(studio["url"]) + "/models", timeout=10).text

    status = run_kiln("status", "-w", workspace, "--json")
    assert status.code == 0 and {s["state"] for s in services(status.stdout).values()} == {"running"}
    res = run_kiln("down", "features", "mlfow", "-w", workspace)
    assert res.code == 1 and "no local process named mlfow" in res.stderr and "mlflow, features" in res.stderr
    down = run_kiln("down", "evidently", "-w", workspace, "--json")
    assert down.code == 0 and json.loads(down.stdout)["stopped"] == ["evidently"]
    states = {name: s["state"] for name, s in services(run_kiln("status", "-w", workspace, "--json").stdout).items()}
    assert states == {"mlflow": "running", "features": "running", "artifacts": "running", "evidently": "stopped",
                      "studio": "running"}

    down = run_kiln("down", "-w", workspace, "--json")
    assert down.code == 0 and json.loads(down.stdout)["stopped"] == ["studio", "artifacts", "features", "mlflow"]
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/health", timeout=2)
    status = run_kiln("status", "-w", workspace)
    assert status.code == 0 and status.stdout.count("stopped") == 5
    assert run_kiln("down", "-w", workspace).stdout.strip() == "nothing was running"


def test_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        ws = make_workspace(tmp_path / "ws", port)
        res = run_kiln("up", "-w", ws)
    assert res.code == 2
    assert f"port {port}" in res.stderr and "services.mlflow.port" in res.stderr
    assert "KILN_SERVICES__MLFLOW__PORT" in res.stderr and "Traceback" not in res.stderr
    assert not (ws / ".kiln" / "run" / "mlflow.pid").exists()


def test_port_from_environment(tmp_path: Path) -> None:
    from tests.conftest import clean_env

    ws = make_workspace(tmp_path / "ws", 5000)
    port = free_port()
    env = clean_env(KILN_SERVICES__MLFLOW__PORT=str(port))
    res = run_kiln("status", "-w", ws, "--json", env=env)
    assert res.code == 0 and services(res.stdout)["mlflow"]["url"] == f"http://127.0.0.1:{port}"


def test_cluster_profile_has_no_local_stack(tmp_path: Path) -> None:
    assert run_kiln("init", tmp_path / "ws", "--profile", "cluster").code == 0
    res = run_kiln("up", "-w", tmp_path / "ws")
    assert res.code == 1 and "profile is 'cluster'" in res.stderr


def test_feature_server_answers_online_reads(tmp_path: Path, churn_dataset: Path) -> None:
    ws = make_workspace(tmp_path / "ws", free_port())
    assert run_kiln("features", "ingest", churn_dataset, "-w", ws).code == 0
    try:
        res = run_kiln("up", "features", "-w", ws, "--json")
        assert res.code == 0, res.stderr
        assert list(services(res.stdout)) == ["features"]
        url = str(services(res.stdout)["features"]["url"])
        body = {"feature_service": "churn_v1", "entities": {"customer_id": [7]}}
        answer = httpx.post(url + "/get-online-features", json=body, timeout=10).json()
        names = answer["metadata"]["feature_names"]
        values = {n: r["values"][0] for n, r in zip(names, answer["results"])}
        local = json.loads(run_kiln("features", "get", "--customer", "7", "-w", ws, "--json").stdout)["rows"][0]
        assert values["usage_minutes_30d_mean"] == pytest.approx(local["usage_minutes_30d_mean"])
        assert values["contract"] == local["contract"]
    finally:
        run_kiln("down", "-w", ws)
