"""compile_model: compiles alone as a reusable component with the interface its README describes."""

from pathlib import Path

from components._contract import interface
from components.compile_model.component import compile_model


def test_compile_model_is_a_reusable_component(tmp_path: Path) -> None:
    inputs, outputs = interface(compile_model, tmp_path)
    assert inputs == {"target": "STRING", "version": "STRING", "workspace": "STRING"}
    assert outputs == {"Output": "STRING", "bundle": "system.Model", "metrics": "system.Metrics"}
