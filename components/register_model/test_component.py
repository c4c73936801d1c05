"""register_model: compiles alone as a reusable component with the interface its README describes."""

from pathlib import Path

from components._contract import interface
from components.register_model.component import register_model


def test_register_model_is_a_reusable_component(tmp_path: Path) -> None:
    inputs, outputs = interface(register_model, tmp_path)
    assert inputs == {
        "approve": "BOOLEAN",
        "model_name": "STRING",
        "pipeline_run": "STRING",
        "pipeline_run_id": "STRING",
        "workspace": "STRING",
        "model": "system.Model",
    }
    assert outputs == {"Output": "STRING", "metrics": "system.Metrics"}
