"""Real outside data: the public IBM Telco churn export comes in through `kiln data import` and validates."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_kiln


def test_telco_export_imports_and_validates(telco_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "telco"
    res = run_kiln("data", "import", telco_csv, "--entity", "customerid", "--label", "churn",
                   "--protected", "gender", "--protected", "seniorcitizen", "--as-of", "2026-01-01", "--out", out, "--json")
    assert res.code == 0, res.stderr
    doc = json.loads(res.stdout)
    raw = pd.read_csv(telco_csv)
    assert doc["rows"] == len(raw)
    assert doc["label_mapping"] == {"No": 0, "Yes": 1}
    assert doc["positive_rate"] == round((raw["churn"] == "Yes").mean(), 4)
    assert sorted(doc["protected"]) == ["gender", "seniorcitizen"]
    assert doc["columns"]["tenure"].startswith("int64")
    assert doc["columns"]["monthlycharges"] == "float64"
    assert doc["columns"]["contract"] == "string ['Month-to-month', 'One year', 'Two year']"

    entities = pd.read_parquet(out / "entities.parquet")
    blanks = raw["totalcharges"].astype(str).str.strip() == ""
    assert entities["totalcharges"].isna().sum() == blanks.sum()  # the export's blank cells are nulls, not zeros

    res = run_kiln("data", "validate", out, "--json")
    assert res.code == 0, res.stderr
    assert json.loads(res.stdout)["tables"] == {"entities": len(raw), "labels": len(raw)}


def test_telco_export_gets_its_own_feature_service(telco_csv: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert run_kiln("init", ws).code == 0
    data = ws / "data" / "telco"
    assert run_kiln("data", "import", telco_csv, "--entity", "customerid", "--label", "churn",
                    "--as-of", "2026-01-01", "--name", "telco", "--out", data).code == 0
    res = run_kiln("features", "ingest", data, "-w", ws, "--json")
    assert res.code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["feature_service"] == "telco_v1" and doc["feature_views"] == ["telco_profile"]
    raw = pd.read_csv(telco_csv)
    first = raw.iloc[0]
    res = run_kiln("features", "get", "--customer", first["customerid"], "--service", "telco_v1", "-w", ws, "--json")
    assert res.code == 0, res.stderr
    row = json.loads(res.stdout)["rows"][0]
    assert row["contract"] == first["contract"] and row["tenure"] == first["tenure"]
    assert "gender" not in row, "protected attributes stay out of the model's service"
    out = tmp_path / "train.parquet"
    res = run_kiln("features", "training-set", "--labels", data, "--service", "telco_v1", "--out", out, "-w", ws)
    assert res.code == 0, res.stderr
    train = pd.read_parquet(out)
    assert len(train) == len(raw) and train["churn"].mean() == pytest.approx((raw["churn"] == "Yes").mean())
    assert train["contract"].notna().all()


@pytest.mark.slow
def test_telco_export_tunes_registers_and_explains(telco_csv: Path, tmp_path: Path) -> None:
    """The whole modelling path on outside data: a one-snapshot CSV, so the split is stratified."""
    ws = tmp_path / "ws"
    assert run_kiln("init", ws).code == 0
    data = ws / "data" / "telco"
    assert run_kiln("data", "import", telco_csv, "--entity", "customerid", "--label", "churn", "--protected",
                    "gender", "--protected", "seniorcitizen", "--as-of", "2026-01-01", "--name", "telco",
                    "--out", data).code == 0
    assert run_kiln("features", "ingest", data, "-w", ws).code == 0
    train = ws / "train.parquet"
    assert run_kiln("features", "training-set", "--labels", data, "--service", "telco_v1", "--out", train,
                    "-w", ws).code == 0

    res = run_kiln("tune", "-t", train, "-f", "lgbm", "-s", "hyperband", "-n", "4", "--max-iterations", "3",
                   "-w", ws, "--json", timeout=600)
    assert res.code == 0, res.stderr[-3000:]
    tuned = json.loads(res.stdout)
    version = tuned["registered"]["version"]
    assert version["name"] == "telco" and version["aliases"] == ["challenger"]
    assert tuned["metrics"]["test"]["auc"] > 0.75, "the Telco export is learnable: a tuned model should beat 0.75"
    facets = {g["facet"] for g in tuned["registered"]["evaluation"]["bias"]}
    assert {"gender=Female", "gender=Male"} <= facets

    res = run_kiln("clarify", "bias", "--facet", "seniorcitizen=1", "--model", "telco@challenger", "-w", ws, "--json")
    assert res.code == 0, res.stderr[-2000:]
    raw = pd.read_csv(telco_csv)
    ci = next(m for m in json.loads(res.stdout)["pre_training"] if m["name"] == "CI")
    n_d = int((raw["seniorcitizen"] == 1).sum())
    assert ci["value"] == pytest.approx((len(raw) - 2 * n_d) / len(raw))

    res = run_kiln("clarify", "explain", "telco@challenger", "--rows", "80", "-w", ws, "--json")
    assert res.code == 0, res.stderr[-2000:]
    top = json.loads(res.stdout)["global_importance"][0]["feature"]
    res = run_kiln("models", "card", "telco@challenger", "-w", ws)
    assert res.code == 0 and "Model card: telco version 1" in res.stdout and top in res.stdout
    assert "stratified" in res.stdout
