"""evaluate_model: compiles alone as a reusable component with the interface its README describes."""

from pathlib import Path

from components._contract import interface
from components.evaluate_model.component import evaluate_model


def test_evaluate_model_is_a_reusable_component(tmp_path: Path) -> None:
    inputs, outputs = interface(evaluate_model, tmp_path)
    assert inputs == {
        "max_auc_drop": "NUMBER_DOUBLE",
        "min_auc": "NUMBER_DOUBLE",
        "model_name": "STRING",
        "workspace": "STRING",
        "model": "system.Model",
    }
    assert outputs == {
        "Output": "BOOLEAN",
        "curves": "system.ClassificationMetrics",
        "gate": "system.Markdown",
        "metrics": "system.Metrics",
    }
