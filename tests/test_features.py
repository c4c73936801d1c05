"""Feature Store on Feast: ingestion, point-in-time training sets, online reads, atomicity, bad input."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kiln.data.dataset import staged_dataset, write_dataset
from kiln.data.schema import CHURN_SCHEMA
from kiln.errors import EnvironmentProblem, InputError, ValidationFailed
from kiln.features.ingest import ingest
from kiln.features.online import get_online
from kiln.features.training import build_training_set
from kiln.workspace import Workspace, init_workspace
from tests.conftest import run_kiln

pytestmark = pytest.mark.slow

T0 = pd.Timestamp("2026-03-01", tz="UTC")


def day(n: int, hour: int = 0) -> pd.Timestamp:
    return T0 + pd.Timedelta(days=n, hours=hour)


def write_churn(path: Path, entities: list[dict], events: list[dict], labels: list[dict]) -> Path:
    frames = {
        "entities": pd.DataFrame(entities).astype({"customer_id": "int64", "senior_citizen": "int64"}),
        "events": pd.DataFrame(events).astype({"customer_id": "int64", "support_calls": "int64",
                                               "payment_delay_days": "int64", "dropped_calls": "int64"}),
        "labels": pd.DataFrame(labels).astype({"customer_id": "int64", "churned": "int64"}),
    }
    with staged_dataset(path, overwrite=True) as stage:
        write_dataset(stage, "churn", CHURN_SCHEMA, frames, {"hand-made": True}, {})
    return path


def customer(cid: int, charges: float = 50.0, contract: str = "month-to-month") -> dict:
    return {"customer_id": cid, "signup_date": day(-100), "contract": contract, "payment_method": "credit-card",
            "plan": "standard", "monthly_charges": charges, "gender": "female", "senior_citizen": 0}


def event(cid: int, when: pd.Timestamp, usage: float, calls: int = 0, delay: int = 0) -> dict:
    return {"customer_id": cid, "event_timestamp": when, "usage_minutes": usage, "data_gb": 1.0,
            "support_calls": calls, "payment_delay_days": delay, "dropped_calls": 0}


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return init_workspace(tmp_path / "ws")[0]


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """Customer 1 is active on days 1, 2 and 5 (a spike of 1000 minutes on day 5); customer 2 only on day 1."""
    return write_churn(
        tmp_path / "small",
        [customer(1), customer(2, charges=80.0, contract="two-year")],
        [event(1, day(1, 9), 10.0, calls=1), event(1, day(2, 9), 20.0, delay=3), event(1, day(5, 9), 1000.0, calls=4),
         event(2, day(1, 9), 30.0)],
        [
            {"customer_id": 1, "label_timestamp": day(3), "churned": 0},       # sees days 1-2 only
            {"customer_id": 1, "label_timestamp": day(5, 12), "churned": 0},   # day 5 is not over yet
            {"customer_id": 1, "label_timestamp": day(6), "churned": 1},       # now day 5 counts
            {"customer_id": 2, "label_timestamp": day(2), "churned": 0},
            {"customer_id": 2, "label_timestamp": day(20), "churned": 1},      # activity past its 7-day TTL
        ],
    )


def test_training_set_is_point_in_time_correct(ws: Workspace, small: Path, tmp_path: Path) -> None:
    ingest(ws, small)
    result = build_training_set(ws, small, "churn_v1", tmp_path / "train.parquet")
    t = pd.read_parquet(result.path).set_index(["customer_id", "label_timestamp"])
    assert len(t) == 5, "every label row is kept, even one whose features expired"

    before_spike = t.loc[(1, day(3))]
    assert before_spike["usage_minutes_7d_mean"] == pytest.approx(15.0)  # (10 + 20) / 2
    assert before_spike["support_calls_7d"] == 1 and before_spike["payment_delay_days_7d_max"] == 3
    assert before_spike["tenure_days"] == 103  # signup 100 days before day 0; stamped at the end of day 2

    same_day = t.loc[(1, day(5, 12))]
    assert same_day["usage_minutes_7d_mean"] == pytest.approx(15.0), "a label must not see the day it falls in"

    after = t.loc[(1, day(6))]
    assert after["usage_minutes_7d_mean"] == pytest.approx((10 + 20 + 1000) / 3)
    assert after["support_calls_7d"] == 5
    assert after["support_calls_per_active_day_30d"] == pytest.approx(5 / 3)  # the on-demand view
    assert after["usage_minutes_per_dollar"] == pytest.approx((10 + 20 + 1000) / 3 / 50.0)

    expired = t.loc[(2, day(20))]
    assert pd.isna(expired["usage_minutes_7d_mean"]) and pd.isna(expired["support_calls_30d"])
    assert expired["contract"] == "two-year", "the profile's long TTL still holds"
    assert "gender" not in t.columns, "protected attributes stay out of the model's service"

    lineage = json.loads(Path(result.path + ".json").read_text())["lineage"]
    assert lineage["feature_service"] == "churn_v1"
    assert lineage["dataset_content_hash"] == json.loads((small / "dataset.json").read_text())["content_hash"]


def test_generated_data_never_sees_the_future(ws: Workspace, churn_dataset: Path, tmp_path: Path) -> None:
    ingest(ws, churn_dataset)
    result = build_training_set(ws, churn_dataset, "churn_v1", tmp_path / "train.parquet")
    t = pd.read_parquet(result.path)
    events = pd.read_parquet(churn_dataset / "events.parquet")
    sample = t.sample(60, random_state=0)
    for row in sample.itertuples():
        # Expected from first principles: events of whole days before the label's day, 7 days back.
        label_day = row.label_timestamp.floor("D")
        mine = events[(events.customer_id == row.customer_id)
                      & (events.event_timestamp < label_day)
                      & (events.event_timestamp >= label_day - pd.Timedelta(days=7))]
        if mine.empty:
            assert pd.isna(row.usage_minutes_7d_mean) or row.usage_minutes_7d_mean is None
        else:
            assert row.usage_minutes_7d_mean == pytest.approx(mine.usage_minutes.mean()), row
            assert row.support_calls_7d == mine.support_calls.sum()


def test_online_values_are_the_newest(ws: Workspace, small: Path) -> None:
    ingest(ws, small)
    got = get_online(ws, ["1", "2"], "churn_v1")
    rows = {r["customer_id"]: r for r in got.rows}
    assert rows[1]["usage_minutes_7d_mean"] == pytest.approx((10 + 20 + 1000) / 3)
    assert rows[2]["usage_minutes_30d_mean"] == pytest.approx(30.0)
    assert rows[2]["contract"] == "two-year"
    with pytest.raises(InputError, match="unknown customer_id in the online store: 77"):
        get_online(ws, ["1", "77"], "churn_v1")
    with pytest.raises(InputError, match="unknown feature service 'churn_v9'"):
        get_online(ws, ["1"], "churn_v9")
    with pytest.raises(InputError, match="integer id"):
        get_online(ws, ["abc"], "churn_v1")


def test_a_later_batch_appends_and_updates_online(ws: Workspace, small: Path, tmp_path: Path) -> None:
    ingest(ws, small)
    later = write_churn(tmp_path / "later", [customer(1)], [event(1, day(7, 9), 100.0)],
                        [{"customer_id": 1, "label_timestamp": day(8), "churned": 0}])
    report = ingest(ws, later)
    assert report.online_rows["churn_activity"] == 1
    row = get_online(ws, ["1"], "churn_v1").rows[0]
    # Day 7's window reaches back over the first batch's days 1, 2 and 5.
    assert row["usage_minutes_7d_mean"] == pytest.approx((10 + 20 + 1000 + 100) / 4)
    again = ingest(ws, later)  # the same batch twice changes nothing
    assert again.offline_rows["events"] == report.offline_rows["events"]


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def online_store_locked(ws: Workspace) -> Iterator[None]:
    """Another process holding the SQLite online store's write lock: an ingestion's online push fails."""
    holder = sqlite3.connect(ws.settings.features.online_store.path, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        holder.rollback()
        holder.close()


def test_failed_ingestion_leaves_both_stores_as_they_were(ws: Workspace, small: Path, tmp_path: Path) -> None:
    ingest(ws, small)
    offline = Path(ws.settings.features.offline_store.path)
    before_files = snapshot(offline)
    before_online = get_online(ws, ["1", "2"], "churn_v1")
    later = write_churn(tmp_path / "later", [customer(1), customer(3)], [event(1, day(7, 9), 100.0),
                                                                         event(3, day(7, 9), 5.0)],
                        [{"customer_id": 1, "label_timestamp": day(8), "churned": 0}])
    with online_store_locked(ws), pytest.raises(EnvironmentProblem, match="rolled back"):
        ingest(ws, later)
    assert snapshot(offline) == before_files
    assert get_online(ws, ["1", "2"], "churn_v1") == before_online
    with pytest.raises(InputError, match="unknown customer_id"):
        get_online(ws, ["3"], "churn_v1")


def _set(table: str, column: str, row: int, value: object):
    def change(frames: dict[str, pd.DataFrame]) -> None:
        frame = frames[table]
        if column == "customer_id" and value is None:
            frame[column] = frame[column].astype("Int64")
        frame.loc[row, column] = value
    return change


def _replace(table: str, fn):
    def change(frames: dict[str, pd.DataFrame]) -> None:
        frames[table] = fn(frames[table])
    return change


@pytest.mark.parametrize("change,needle", [
    (_set("events", "usage_minutes", 3, -1.0), "usage_minutes"),
    (_replace("events", lambda f: f.drop(columns=["data_gb"])), "data_gb"),
    (_replace("entities", lambda f: f.assign(loyalty="gold")), "loyalty"),
    (_replace("entities", lambda f: f.assign(monthly_charges=f["monthly_charges"].astype(str))), "monthly_charges"),
    (_set("labels", "customer_id", 0, None), "customer_id"),
    (_replace("events", lambda f: pd.concat([f, f.iloc[:1]])), "not unique"),
    (_replace("events", lambda f: f.assign(event_timestamp=f["event_timestamp"].astype(str))), "event_timestamp"),
    (_set("events", "event_timestamp", 0, pd.Timestamp("2099-01-01", tz="UTC")), "in the future"),
])
def test_invalid_dataset_writes_nothing(ws: Workspace, churn_dataset: Path, tmp_path: Path, change, needle: str) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(churn_dataset, bad)
    frames = {t: pd.read_parquet(bad / f"{t}.parquet") for t in ("entities", "events", "labels")}
    change(frames)
    for table, frame in frames.items():
        frame.to_parquet(bad / f"{table}.parquet", index=False)
    features = ws.root / "features"
    before = snapshot(features)
    with pytest.raises(ValidationFailed, match=needle):
        ingest(ws, bad)
    assert snapshot(features) == before


def test_a_broken_definitions_file_is_named(ws: Workspace, small: Path) -> None:
    from kiln.features.repo import apply_repo

    ingest(ws, small)
    path = ws.root / "features" / "repo" / "churn_features.py"
    path.write_text(path.read_text() + "\nbroken = FeatureView(name='x', entities=[customer], source=None,\n")
    with pytest.raises(InputError, match="does not load: SyntaxError"):
        apply_repo(ws)


def test_cli_end_to_end_and_errors(tmp_path: Path, small: Path) -> None:
    ws = tmp_path / "cli"
    assert run_kiln("init", ws).code == 0
    res = run_kiln("features", "ingest", small, "-w", ws, "--json")
    assert res.code == 0, res.stderr
    assert json.loads(res.stdout)["online_rows"] == {"churn_profile": 2, "churn_activity": 2}
    repo = ws / "features" / "repo"
    assert (repo / "feature_store.yaml").read_text().count("#") >= 5, "feature_store.yaml is commented"
    assert "churn_v1 = FeatureService" in (repo / "churn_features.py").read_text()

    res = run_kiln("features", "get", "--customer", "1", "-w", ws, "--json")
    assert res.code == 0 and json.loads(res.stdout)["rows"][0]["customer_id"] == 1

    res = run_kiln("features", "get", "--customer", "42", "-w", ws)
    assert res.code == 1 and "unknown customer_id" in res.stderr and "Traceback" not in res.stderr

    labels = tmp_path / "labels.csv"
    pd.DataFrame({"customer_id": [1], "label_timestamp": ["2099-01-01"], "churned": [0]}).to_csv(labels, index=False)
    res = run_kiln("features", "training-set", "--labels", labels, "--out", tmp_path / "t.parquet", "-w", ws)
    assert res.code == 1 and "label_timestamp" in res.stderr and "future" in res.stderr
    assert not (tmp_path / "t.parquet").exists()

    pd.DataFrame({"customer_id": [1], "when": ["2026-03-04"]}).to_csv(labels, index=False)
    res = run_kiln("features", "training-set", "--labels", labels, "--out", tmp_path / "t.parquet", "-w", ws)
    assert res.code == 1 and "'label_timestamp'" in res.stderr

    res = run_kiln("features", "training-set", "--labels", small, "--service", "nope", "--out",
                   tmp_path / "t.parquet", "-w", ws)
    assert res.code == 1 and "unknown feature service 'nope'" in res.stderr and "churn_v1" in res.stderr

    res = run_kiln("features", "training-set", "--labels", small, "--out", tmp_path / "t.parquet", "-w", ws, "--json")
    assert res.code == 0, res.stderr
    assert json.loads(res.stdout)["rows"] == 5
    assert np.isclose(pd.read_parquet(tmp_path / "t.parquet")["churned"].mean(), 0.4)


def test_the_default_feature_service_is_the_only_datasets(ws: Workspace, small: Path, tmp_path: Path) -> None:
    from kiln.data.dataset import open_dataset
    from kiln.data.importer import ImportOptions, import_dataset
    from kiln.features.repo import add_dataset, default_service

    with pytest.raises(InputError, match="no feature service yet"):
        default_service(ws)
    ingest(ws, small)
    assert default_service(ws) == "churn_v1"

    csv = tmp_path / "shop.csv"
    pd.DataFrame({"id": [1, 2], "spend": [3.0, 4.0], "left": ["yes", "no"]}).to_csv(csv, index=False)
    shop = import_dataset(ImportOptions(csv=csv, entity="id", label="left", as_of=T0.date()), tmp_path / "shop")
    add_dataset(ws, open_dataset(shop.path))
    with pytest.raises(InputError, match=r"2 datasets .*: churn_v1, shop_v1") as info:
        default_service(ws)
    assert info.value.hint == "choose one with --service NAME"
    res = run_kiln("features", "get", "--customer", "1", "-w", ws.root)
    assert res.code == 1 and "churn_v1, shop_v1" in res.stderr and "--service" in res.stderr
    assert get_online(ws, ["1"], "churn_v1").rows[0]["customer_id"] == 1


def test_materialize_rebuilds_the_online_store(ws: Workspace, small: Path) -> None:
    from kiln.features.materialize import materialize

    ingest(ws, small)
    Path(ws.settings.features.online_store.path).unlink()  # lose the online store entirely
    from kiln.features.repo import apply_repo

    apply_repo(ws)  # recreates its empty tables
    with pytest.raises(InputError, match="unknown customer_id"):
        get_online(ws, ["1"], "churn_v1")
    result = materialize(ws, day(-200).to_pydatetime(), day(30).to_pydatetime())
    assert result.feature_views == ["churn_activity", "churn_profile"]
    row = get_online(ws, ["1"], "churn_v1").rows[0]
    assert row["usage_minutes_7d_mean"] == pytest.approx((10 + 20 + 1000) / 3)
    with pytest.raises(InputError, match="is not before"):
        materialize(ws, day(5).to_pydatetime(), day(1).to_pydatetime())


def test_consistency_check_finds_a_drifted_online_value(ws: Workspace, churn_dataset: Path) -> None:
    from kiln.features.consistency import StoresDisagree, check_consistency
    from kiln.features.definitions import ACTIVITY_FEATURES
    from kiln.features.repo import open_store

    ingest(ws, churn_dataset)
    report = check_consistency(ws, sample=400)
    assert report.differences == [] and report.checked_entities > 300
    assert set(report.views) == {"churn_profile", "churn_activity"}

    # Someone writes a stale value straight into the online store for customer 5.
    offline = pd.read_parquet(Path(ws.settings.features.offline_store.path) / "churn" / "activity")
    latest = offline[offline.customer_id == 5].sort_values("event_timestamp").iloc[[-1]]
    latest = latest[["customer_id", "event_timestamp", *[n for n, _, _ in ACTIVITY_FEATURES]]].copy()
    latest["support_calls_30d"] = latest["support_calls_30d"] + 9
    open_store(ws).write_to_online_store("churn_activity", latest)
    with pytest.raises(StoresDisagree) as info:
        check_consistency(ws, sample=400)
    assert info.value.differences == [{"view": "churn_activity", "key": "customer_id", "id": 5,
                                       "feature": "support_calls_30d",
                                       "offline": int(latest["support_calls_30d"].iloc[0]) - 9,
                                       "online": int(latest["support_calls_30d"].iloc[0])}]
    res = run_kiln("features", "check", "--sample", "400", "-w", ws.root, "--json")
    assert res.code == 2 and "customer_id=5 support_calls_30d" in res.stderr
    assert json.loads(res.stdout)["consistent"] is False


def add_loyalty_tier(ws: Workspace) -> None:
    """What a user does by hand: a new Field in the view, and a new service version that uses it."""
    path = ws.root / "features" / "repo" / "churn_features.py"
    text = path.read_text()
    anchor = "        Field(name='monthly_charges', dtype=Float64),\n"
    assert anchor in text
    text = text.replace(anchor, anchor + "        Field(name='loyalty_tier', dtype=String),\n")
    text += ("\nchurn_v2 = FeatureService(\n    name='churn_v2',\n"
             "    features=[churn_profile[['contract', 'monthly_charges', 'loyalty_tier']], churn_activity],\n)\n")
    path.write_text(text)


def test_schema_evolution_adds_a_feature_without_losing_data(ws: Workspace, small: Path, tmp_path: Path) -> None:
    from kiln.features.backfill import backfill
    from kiln.features.repo import apply_repo

    ingest(ws, small)
    v1_before = pd.read_parquet(build_training_set(ws, small, "churn_v1", tmp_path / "v1a.parquet").path)
    add_loyalty_tier(ws)
    applied = apply_repo(ws)
    assert "churn_v2" in applied.objects["feature_services"]
    tiers = tmp_path / "tiers.csv"
    pd.DataFrame({"customer_id": [1], "loyalty_tier": ["gold"]}).to_csv(tiers, index=False)
    report = backfill(ws, "churn_profile", tiers)
    assert report.rows_updated == 1 and report.rows_total == 2

    v1_after = pd.read_parquet(build_training_set(ws, small, "churn_v1", tmp_path / "v1b.parquet").path)
    pd.testing.assert_frame_equal(v1_before, v1_after)
    v2 = pd.read_parquet(build_training_set(ws, small, "churn_v2", tmp_path / "v2.parquet").path)
    assert v2.set_index("customer_id")["loyalty_tier"].to_dict() == {1: "gold", 2: None}
    assert v2["usage_minutes_7d_mean"].equals(v1_after["usage_minutes_7d_mean"])
    assert get_online(ws, ["1"], "churn_v2").rows[0]["loyalty_tier"] == "gold"

    # A later batch of data keeps the backfilled value.
    later = write_churn(tmp_path / "later", [customer(1), customer(2, charges=80.0, contract="two-year")],
                        [event(1, day(7, 9), 100.0)], [{"customer_id": 1, "label_timestamp": day(8), "churned": 0}])
    ingest(ws, later)
    assert get_online(ws, ["1"], "churn_v2").rows[0]["loyalty_tier"] == "gold"


def test_backfill_bad_input_changes_nothing(ws: Workspace, small: Path, tmp_path: Path) -> None:
    from kiln.features.backfill import backfill

    ingest(ws, small)
    features = ws.root / "features"
    before = snapshot(features)
    data = tmp_path / "d.csv"
    pd.DataFrame({"customer_id": [1], "loyalty_tier": ["gold"]}).to_csv(data, index=False)
    with pytest.raises(InputError, match="'loyalty_tier' is not a feature of view 'churn_profile'"):
        backfill(ws, "churn_profile", data)
    with pytest.raises(InputError, match="unknown feature view 'churn_nope'"):
        backfill(ws, "churn_nope", data)
    pd.DataFrame({"customer_id": [99], "plan": ["basic"]}).to_csv(data, index=False)
    with pytest.raises(InputError, match="unknown customer_id in view 'churn_profile': 99"):
        backfill(ws, "churn_profile", data)
    pd.DataFrame({"customer_id": [1, 1], "plan": ["basic", "premium"]}).to_csv(data, index=False)
    with pytest.raises(InputError, match="repeats"):
        backfill(ws, "churn_profile", data)
    assert snapshot(features) == before
