"""The Feast offline store on S3 (SeaweedFS on loopback): ingestion writes each partition as one object, DuckDB
reads them for point-in-time training sets and materialization, and a failed ingestion leaves every object as it
was."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kiln.errors import EnvironmentProblem, KilnError
from kiln.features.consistency import check_consistency
from kiln.features.ingest import ingest
from kiln.features.materialize import materialize
from kiln.features.online import get_online
from kiln.features.repo import apply_repo
from kiln.features.training import build_training_set
from kiln.workspace import Workspace, init_workspace, open_workspace
from tests.s3 import S3
from tests.test_features import customer, day, event, online_store_locked, small, write_churn

pytestmark = pytest.mark.slow
__all__ = ["small"]  # the fixture, shared with test_features


def s3_workspace(root: Path) -> tuple[Workspace, str]:
    """A local workspace whose offline store is a fresh prefix of the bucket `kiln`."""
    init_workspace(root)
    prefix = f"ws-{uuid.uuid4().hex[:8]}/offline"
    settings = yaml.safe_load((root / "kiln.yaml").read_text())
    settings.setdefault("features", {})["offline_store"] = {"type": "file", "path": f"s3://kiln/{prefix}"}
    (root / "kiln.yaml").write_text(yaml.safe_dump(settings))
    return open_workspace(root), prefix


def objects(store: S3, prefix: str) -> dict[str, str]:
    client = store.client()
    keys = store.keys(prefix)
    return {k[len(prefix) + 1:]: hashlib.sha256(client.get_object(Bucket="kiln", Key=k)["Body"].read()).hexdigest()
            for k in keys}


def test_training_sets_from_s3_match_the_local_store(aws: S3, small: Path, tmp_path: Path) -> None:
    ws, prefix = s3_workspace(tmp_path / "s3ws")
    local = init_workspace(tmp_path / "localws")[0]
    report = ingest(ws, small)
    ingest(local, small)

    stored = objects(aws, prefix)
    assert f"churn/events/date={day(5).strftime('%Y-%m-%d')}/part-0.parquet" in stored
    assert sum(report.offline_partitions.values()) == len(stored), "one object per partition, nothing staged left"
    assert not Path(ws.root / "features" / "data" / "offline").exists(), "nothing of the store on local disk"

    got = pd.read_parquet(build_training_set(ws, small, "churn_v1", tmp_path / "s3.parquet").path)
    want = pd.read_parquet(build_training_set(local, small, "churn_v1", tmp_path / "local.parquet").path)
    key = ["customer_id", "label_timestamp"]
    pd.testing.assert_frame_equal(got.sort_values(key).reset_index(drop=True),
                                  want.sort_values(key).reset_index(drop=True), check_like=True)
    after = got.set_index(key).loc[(1, day(6))]
    assert after["usage_minutes_7d_mean"] == pytest.approx((10 + 20 + 1000) / 3)


def test_materialize_and_consistency_read_the_s3_store(aws: S3, small: Path, tmp_path: Path) -> None:
    ws, _ = s3_workspace(tmp_path / "ws")
    ingest(ws, small)
    Path(ws.settings.features.online_store.path).unlink()  # lose the online store entirely
    apply_repo(ws)  # recreates its empty tables
    materialize(ws, start=day(-200).to_pydatetime(), end=day(30).to_pydatetime())
    row = get_online(ws, ["1"], "churn_v1").rows[0]
    assert row["usage_minutes_7d_mean"] == pytest.approx((10 + 20 + 1000) / 3)
    report = check_consistency(ws)
    assert report.consistent and report.checked_entities == 4  # two entities in each of two views


def test_a_failed_ingestion_leaves_every_object_as_it_was(aws: S3, small: Path, tmp_path: Path) -> None:
    ws, prefix = s3_workspace(tmp_path / "ws")
    ingest(ws, small)
    before = objects(aws, prefix)
    later = write_churn(tmp_path / "later", [customer(1), customer(3)],
                        [event(1, day(5, 20), 7.0), event(3, day(7, 9), 5.0)],  # rewrites day 5, adds day 7
                        [{"customer_id": 1, "label_timestamp": day(8), "churned": 0}])
    # the online push fails after the offline partitions were swapped in
    with online_store_locked(ws), pytest.raises(EnvironmentProblem, match="rolled back"):
        ingest(ws, later)
    assert objects(aws, prefix) == before
    assert not any(k.startswith(".staging") for k in objects(aws, prefix.rsplit("/", 1)[0]))

    ingest(ws, later)  # and the same batch goes in once the store is free
    assert len(objects(aws, prefix)) > len(before)


def test_wrong_credentials_are_named_and_write_nothing(aws: S3, small: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    ws, prefix = s3_workspace(tmp_path / "ws")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-key")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # a new process: credentials read afresh
    with pytest.raises(KilnError, match=f"s3://kiln/{prefix}") as caught:
        ingest(ws, small)
    assert "AWS_" in (caught.value.hint or "")
    assert objects(aws, prefix) == {}
