"""explain_model: compiles alone as a reusable component with the interface its README describes."""

from pathlib import Path

from components._contract import interface
from components.explain_model.component import explain_model


def test_explain_model_is_a_reusable_component(tmp_path: Path) -> None:
    inputs, outputs = interface(explain_model, tmp_path)
    assert inputs == {"rows": "NUMBER_INTEGER", "seed": "NUMBER_INTEGER", "version": "STRING", "workspace": "STRING"}
    assert outputs == {"explanations": "system.HTML", "metrics": "system.Metrics", "model_card": "system.Markdown"}
