"""tune_model: compiles alone as a reusable component with the interface its README describes."""

from pathlib import Path

from components._contract import interface
from components.tune_model.component import tune_model


def test_tune_model_is_a_reusable_component(tmp_path: Path) -> None:
    inputs, outputs = interface(tune_model, tmp_path)
    assert inputs == {
        "entry_point": "STRING",
        "family": "STRING",
        "max_concurrent": "NUMBER_INTEGER",
        "max_iterations": "NUMBER_INTEGER",
        "pipeline_run": "STRING",
        "pipeline_run_id": "STRING",
        "seed": "NUMBER_INTEGER",
        "strategy": "STRING",
        "trials": "NUMBER_INTEGER",
        "workspace": "STRING",
        "training_set": "system.Dataset",
    }
    assert outputs == {"metrics": "system.Metrics", "model": "system.Model", "report": "system.HTML"}
