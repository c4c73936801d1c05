"""The cluster flavor of the feature store, for real: Redis online store and a SQL registry on PostgreSQL.

The offline store stays a local folder here: these machines have no S3 API to point it at.
"""

from __future__ import annotations

import hashlib
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from kiln.errors import EnvironmentProblem, InputError
from kiln.features.ingest import ingest
from kiln.features.online import get_online
from kiln.features.training import build_training_set
from kiln.workspace import Workspace, init_workspace
from tests.test_features import customer, day, event, write_churn

pytestmark = [pytest.mark.slow, pytest.mark.services]

REDIS = ("127.0.0.1", 6379)
POSTGRES = ("127.0.0.1", 5432)


def reachable(addr: tuple[str, int]) -> bool:
    try:
        socket.create_connection(addr, timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def cluster_ws(tmp_path: Path) -> Iterator[Workspace]:
    if not reachable(REDIS):
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    if not reachable(POSTGRES):
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    import psycopg2
    import redis

    project = f"t{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host=POSTGRES[0], port=POSTGRES[1], user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {project}")
    root = tmp_path / "ws"
    root.mkdir()
    (root / "kiln.yaml").write_text(
        "profile: cluster\n"
        "features:\n"
        f"  project: {project}\n"
        "  online_store:\n    type: redis\n    connection_string: 127.0.0.1:6379\n"
        f"  registry:\n    type: sql\n    path: postgresql+psycopg2://postgres@127.0.0.1:5432/{project}\n"
        f"  offline_store:\n    type: file\n    path: {tmp_path / 'offline'}\n"
    )
    ws = init_workspace(root)[0]
    yield ws
    client = redis.Redis(*REDIS)
    keys = [k for k in client.scan_iter(count=1000) if k.endswith(project.encode())]
    if keys:
        client.delete(*keys)
    client.execute_command("ACL", "DELUSER", f"{project}_ro")
    admin.cursor().execute(f"DROP DATABASE IF EXISTS {project} WITH (FORCE)")
    admin.close()


def small(tmp_path: Path) -> Path:
    return write_churn(
        tmp_path / "small",
        [customer(1), customer(2, charges=80.0, contract="two-year")],
        [event(1, day(1, 9), 10.0, calls=1), event(1, day(2, 9), 20.0), event(1, day(5, 9), 1000.0),
         event(2, day(1, 9), 30.0)],
        [{"customer_id": 1, "label_timestamp": day(3), "churned": 0},
         {"customer_id": 1, "label_timestamp": day(6), "churned": 1},
         {"customer_id": 2, "label_timestamp": day(20), "churned": 1}],
    )


def test_redis_and_postgres_registry(cluster_ws: Workspace, tmp_path: Path) -> None:
    import psycopg2

    data = small(tmp_path)
    ingest(cluster_ws, data)
    yaml = (cluster_ws.root / "features" / "repo" / "feature_store.yaml").read_text()
    assert "type: redis" in yaml and "registry_type: sql" in yaml

    project = cluster_ws.settings.features.project
    with psycopg2.connect(host=POSTGRES[0], port=POSTGRES[1], user="postgres", dbname=project) as conn:
        cur = conn.cursor()
        cur.execute("SELECT feature_service_name FROM feature_services WHERE project_id = %s", (project,))
        assert {r[0] for r in cur.fetchall()} == {"churn_v1", "churn_facets"}

    row = {r["customer_id"]: r for r in get_online(cluster_ws, ["1", "2"], "churn_v1").rows}
    assert row[1]["usage_minutes_7d_mean"] == pytest.approx((10 + 20 + 1000) / 3)
    assert row[2]["contract"] == "two-year"

    t = pd.read_parquet(build_training_set(cluster_ws, data, "churn_v1", tmp_path / "t.parquet").path)
    t = t.set_index(["customer_id", "label_timestamp"])
    assert t.loc[(1, day(3)), "usage_minutes_7d_mean"] == pytest.approx(15.0)
    assert pd.isna(t.loc[(2, day(20)), "usage_minutes_7d_mean"])


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_failed_ingestion_rolls_back_redis(cluster_ws: Workspace, tmp_path: Path) -> None:
    import redis

    from kiln.workspace import open_workspace

    ingest(cluster_ws, small(tmp_path))
    before_online = get_online(cluster_ws, ["1", "2"], "churn_v1")
    offline = Path(cluster_ws.settings.features.offline_store.path)
    before_files = snapshot(offline)

    # A Redis user that may read but not write: the online push fails with NOPERM.
    project = cluster_ws.settings.features.project
    redis.Redis(*REDIS).execute_command("ACL", "SETUSER", f"{project}_ro", "on", ">pw", "~*", "+@read", "+ping",
                                        "+info", "+@connection")
    yaml = (cluster_ws.root / "kiln.yaml").read_text().replace(
        "connection_string: 127.0.0.1:6379", f"connection_string: 127.0.0.1:6379,username={project}_ro,password=pw")
    (cluster_ws.root / "kiln.yaml").write_text(yaml)
    read_only = open_workspace(cluster_ws.root)
    later = write_churn(tmp_path / "later", [customer(1), customer(3)],
                        [event(1, day(7, 9), 100.0), event(3, day(7, 9), 5.0)],
                        [{"customer_id": 1, "label_timestamp": day(8), "churned": 0}])
    with pytest.raises(EnvironmentProblem):
        ingest(read_only, later)
    assert snapshot(offline) == before_files
    assert get_online(cluster_ws, ["1", "2"], "churn_v1") == before_online
    with pytest.raises(InputError, match="unknown customer_id"):
        get_online(cluster_ws, ["3"], "churn_v1")


def test_redis_snapshot_puts_written_entities_back(cluster_ws: Workspace, tmp_path: Path) -> None:
    from kiln.features.ingest import _OnlineSnapshot
    from kiln.features.repo import open_store, plan_by_service

    ingest(cluster_ws, small(tmp_path))
    before = get_online(cluster_ws, ["1", "2"], "churn_v1")
    plan, _ = plan_by_service(cluster_ws, "churn_v1")
    snap = _OnlineSnapshot(cluster_ws, plan, [1, 3])
    snap.take()
    store = open_store(cluster_ws)
    from kiln.features.definitions import ACTIVITY_FEATURES

    rows = pd.DataFrame({"customer_id": [1, 3], "event_timestamp": [day(9), day(9)]})
    for name, ftype, _ in ACTIVITY_FEATURES:
        rows[name] = [1, 2] if ftype == "Int64" else [1.0, 2.0]
    store.write_to_online_store("churn_activity", rows)
    assert get_online(cluster_ws, ["1"], "churn_v1").rows[0]["usage_minutes_7d_mean"] == 1.0
    snap.restore()
    assert get_online(cluster_ws, ["1", "2"], "churn_v1") == before
    with pytest.raises(InputError, match="unknown customer_id"):
        get_online(cluster_ws, ["3"], "churn_v1")
