"""`kiln doctor`: every engine's version, reachable services, a clear failure for an unreachable one."""

from __future__ import annotations

import json
import socket
from importlib.metadata import version
from pathlib import Path

import pytest

from kiln.doctor import ENGINES, check_services
from kiln.settings import load_settings
from tests.conftest import run_kiln


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


def reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_doctor_json_reports_every_engine(tmp_path: Path) -> None:
    assert run_kiln("init", tmp_path / "ws").code == 0
    res = run_kiln("doctor", "-w", tmp_path / "ws", "--json")
    assert res.code == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    engines = {c["name"]: c for c in doc["checks"] if c["kind"] == "engine"}
    assert set(engines) == {dist for _, dist, _ in ENGINES}
    for dist, check in engines.items():
        assert check["ok"], check
        assert check["version"] == version(dist)
    assert engines["kfp"]["version"] == "2.17.0"
    assert any(c["kind"] == "disk" and c["ok"] for c in doc["checks"])
    assert doc["ok"] is True


def test_unreachable_service_is_a_named_problem(tmp_path: Path) -> None:
    port = closed_port()
    (tmp_path / "kiln.yaml").write_text(
        "profile: local\nfeatures:\n  online_store:\n    type: redis\n"
        f"    connection_string: 127.0.0.1:{port}\n"
        f"mlflow:\n  tracking_uri: http://127.0.0.1:{port}\n"
    )
    checks = {c.name: c for c in check_services(load_settings(tmp_path))}
    assert not checks["Feast online store (Redis)"].ok and f"127.0.0.1:{port}" in checks["Feast online store (Redis)"].detail
    assert not checks["MLflow tracking"].ok and "unreachable" in checks["MLflow tracking"].detail


@pytest.mark.services
def test_cluster_stores_on_this_machine_are_reached(tmp_path: Path) -> None:
    if not (reachable(5432) and reachable(6379)):
        pytest.skip("PostgreSQL (127.0.0.1:5432) or Redis (127.0.0.1:6379) is not running here")
    (tmp_path / "kiln.yaml").write_text(
        "profile: cluster\n"
        "features:\n"
        "  online_store:\n    type: redis\n    connection_string: 127.0.0.1:6379\n"
        "  registry:\n    type: sql\n    path: postgresql+psycopg2://postgres@127.0.0.1:5432/postgres\n"
    )
    checks = {c.name: c for c in check_services(load_settings(tmp_path))}
    assert checks["Feast online store (Redis)"].ok, checks["Feast online store (Redis)"].detail
    assert "answers PING" in checks["Feast online store (Redis)"].detail
    assert checks["Feast registry (SQL)"].ok, checks["Feast registry (SQL)"].detail
    assert "PostgreSQL" in checks["Feast registry (SQL)"].detail
