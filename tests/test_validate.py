"""Validation accepts good data, and names the column, rule and rows of bad data, writing nothing."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from kiln.data.validate import validate_dataset
from kiln.errors import DatasetError, ValidationFailed
from tests.conftest import run_kiln


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) with its content hash."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def corrupt(dataset: Path, tmp_path: Path, table: str, change: Callable[[pd.DataFrame], pd.DataFrame]) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    frame = pd.read_parquet(copy / f"{table}.parquet")
    change(frame).to_parquet(copy / f"{table}.parquet", index=False)
    return copy


def _bad_type(f: pd.DataFrame) -> pd.DataFrame:
    return f.assign(monthly_charges=f["monthly_charges"].astype(str))


def _null_key(f: pd.DataFrame) -> pd.DataFrame:
    f["customer_id"] = f["customer_id"].astype("Int64")
    f.loc[[4, 8], "customer_id"] = None
    return f


def _future(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[6, "event_timestamp"] = pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=30)
    return f


def _unknown_category(f: pd.DataFrame) -> pd.DataFrame:
    f.loc[2, "contract"] = "weekly"
    return f


def test_generated_data_is_valid(churn_dataset: Path) -> None:
    report = validate_dataset(churn_dataset)
    assert report.kind == "churn"
    assert set(report.tables) == {"entities", "events", "labels"}
    assert report.content_hash_matches_manifest


def test_cli_validate_passes_with_json(churn_dataset: Path) -> None:
    res = run_kiln("data", "validate", churn_dataset, "--json")
    assert res.code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["valid"] is True and doc["tables"]["entities"] == 400


# The four corruptions the foundation promises to catch, through the real CLI.
@pytest.mark.parametrize("table,change,column,rule", [
    ("entities", _bad_type, "monthly_charges", "wrong type"),
    ("events", _null_key, "customer_id", "null value"),
    ("events", _future, "event_timestamp", "in the future"),
    ("entities", _unknown_category, "contract", "allowed categories"),
])
def test_cli_rejects_corrupted_copy(churn_dataset: Path, tmp_path: Path, table: str,
                                    change: Callable[[pd.DataFrame], pd.DataFrame], column: str, rule: str) -> None:
    copy = corrupt(churn_dataset, tmp_path, table, change)
    before = snapshot(tmp_path)
    res = run_kiln("data", "validate", copy)
    assert res.code == 1
    assert f"{table}.parquet, column '{column}'" in res.stderr and rule in res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""
    assert snapshot(tmp_path) == before, "validation must write nothing"


def test_cli_json_failure_lists_problems(churn_dataset: Path, tmp_path: Path) -> None:
    copy = corrupt(churn_dataset, tmp_path, "entities", _unknown_category)
    res = run_kiln("data", "validate", copy, "--json")
    assert res.code == 1
    doc = json.loads(res.stdout)
    assert doc["valid"] is False
    [problem] = doc["problems"]
    assert problem["column"] == "contract" and problem["count"] == 1
    assert problem["examples"] == [{"row": 2, "key": "customer_id=3", "value": "weekly"}]


def _problems(path: Path) -> list[dict[str, object]]:
    with pytest.raises(ValidationFailed) as info:
        validate_dataset(path)
    return info.value.problems


def test_every_broken_rule_is_reported_at_once(churn_dataset: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(churn_dataset, copy)
    for table, change in [("entities", _unknown_category), ("events", _future)]:
        frame = pd.read_parquet(copy / f"{table}.parquet")
        change(frame).to_parquet(copy / f"{table}.parquet", index=False)
    columns = {(p["table"], p["column"]) for p in _problems(copy)}
    assert columns == {("entities", "contract"), ("events", "event_timestamp")}


@pytest.mark.parametrize("table,change,column,rule", [
    ("events", lambda f: f.assign(usage_minutes=f["usage_minutes"].where(f.index != 3, -5.0)),
     "usage_minutes", "outside the range [0, 1440]"),
    ("labels", lambda f: pd.concat([f, f.iloc[:2]]), "customer_id, label_timestamp", "is not unique"),
    ("labels", lambda f: f.assign(churned=f["churned"].where(f.index != 0, 2)), "churned", "allowed categories"),
    ("entities", lambda f: f.drop(columns=["plan"]), "plan", "required column is missing"),
    ("events", lambda f: f.assign(region="north"), "region", "unexpected column"),
    ("events", lambda f: f.assign(customer_id=f["customer_id"].where(f.index != 1, 999_999)), "customer_id",
     "id not found in entities.parquet"),
    ("labels", lambda f: f.assign(label_timestamp=f["label_timestamp"].dt.tz_localize(None)), "label_timestamp",
     "time zone"),
    ("entities", lambda f: f.assign(senior_citizen=f["senior_citizen"].astype(float)), "senior_citizen",
     "expected an integer"),
])
def test_rule_is_named(churn_dataset: Path, tmp_path: Path, table: str,
                       change: Callable[[pd.DataFrame], pd.DataFrame], column: str, rule: str) -> None:
    problems = _problems(corrupt(churn_dataset, tmp_path, table, change))
    assert any(p["table"] == table and p["column"] == column and rule in str(p["rule"]) for p in problems), problems


def test_offending_rows_are_shown(churn_dataset: Path, tmp_path: Path) -> None:
    problems = _problems(corrupt(churn_dataset, tmp_path, "events", _null_key))
    [p] = [p for p in problems if p["column"] == "customer_id"]
    assert p["count"] == 2 and [e["row"] for e in p["examples"]] == [4, 8]  # type: ignore[union-attr]


def test_unreadable_table_is_named(churn_dataset: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(churn_dataset, copy)
    (copy / "events.parquet").write_bytes(b"not parquet at all")
    problems = _problems(copy)
    assert problems[0]["table"] == "events" and "not a readable parquet file" in str(problems[0]["rule"])


def test_missing_table_is_named(churn_dataset: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(churn_dataset, copy)
    (copy / "labels.parquet").unlink()
    assert any(p["table"] == "labels" and p["rule"] == "file is missing" for p in _problems(copy))


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no dataset.json"):
        validate_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="unreadable manifest"):
        validate_dataset(tmp_path)
    res = run_kiln("data", "validate", tmp_path / "nowhere")
    assert res.code == 1 and "no such dataset folder" in res.stderr


def test_builtin_schema_cannot_be_loosened_by_editing_the_manifest(churn_dataset: Path, tmp_path: Path) -> None:
    copy = corrupt(churn_dataset, tmp_path, "entities", _unknown_category)
    manifest = json.loads((copy / "dataset.json").read_text())
    for table in manifest["schema"]["tables"]:
        for col in table["columns"]:
            col["categories"] = None
    (copy / "dataset.json").write_text(json.dumps(manifest))
    assert any(p["column"] == "contract" for p in _problems(copy))


def test_changed_content_is_noticed(churn_dataset: Path, tmp_path: Path) -> None:
    copy = corrupt(churn_dataset, tmp_path, "events", lambda f: f.iloc[:-1])
    report = validate_dataset(copy)
    assert not report.content_hash_matches_manifest
