"""validate_data: compiles alone as a reusable component with the interface its README describes."""

from pathlib import Path

from components._contract import interface
from components.validate_data.component import validate_data


def test_validate_data_is_a_reusable_component(tmp_path: Path) -> None:
    inputs, outputs = interface(validate_data, tmp_path)
    assert inputs == {"data": "STRING", "workspace": "STRING"}
    assert outputs == {"dataset": "system.Dataset", "metrics": "system.Metrics"}


def _dataset(folder: Path) -> Path:
    from datetime import date

    from kiln.data.dataset import staged_dataset, write_dataset
    from kiln.data.generate import GenerateOptions, generate_churn
    from kiln.data.schema import CHURN_SCHEMA

    with staged_dataset(folder, overwrite=False) as stage:
        frames, stats = generate_churn(GenerateOptions(customers=60, days=40, seed=5, end=date(2026, 10, 1)))
        write_dataset(stage, "churn", CHURN_SCHEMA, frames, {"seed": 5}, stats)
    return folder


def test_it_runs_locally_copying_a_valid_dataset_and_stopping_at_a_broken_one(tmp_path: Path) -> None:
    import json

    import pandas as pd
    import pytest

    from kiln.workflow.local_run import PipelineFailed, run_local
    from kiln.workspace import init_workspace

    ws, _ = init_workspace(tmp_path / "ws")
    data = _dataset(tmp_path / "churn")
    run = run_local(ws, validate_data, {"workspace": str(ws.root), "data": str(data)})
    task = Path(run.root) / "validate-data"
    copied = sorted(p.name for p in (task / "dataset").iterdir())
    assert copied == ["dataset.json", "entities.parquet", "events.parquet", "labels.parquet"]
    output = json.loads((task / "executor_output.json").read_text())["artifacts"]
    assert output["metrics"]["artifacts"][0]["metadata"]["entities_rows"] == 60
    assert output["dataset"]["artifacts"][0]["metadata"]["content_hash"].startswith("sha256:")

    entities = pd.read_parquet(data / "entities.parquet")
    entities.assign(monthly_charges=entities["monthly_charges"].astype(str)).to_parquet(data / "entities.parquet")
    broken = "(?s)task validate-data failed: ValidationFailed: .*column .monthly_charges.: wrong type"
    with pytest.raises(PipelineFailed, match=broken):
        run_local(ws, validate_data, {"workspace": str(ws.root), "data": str(data)})
    with pytest.raises(PipelineFailed, match="data '/no/such': give a dataset folder"):
        run_local(ws, validate_data, {"workspace": str(ws.root), "data": "/no/such"})
