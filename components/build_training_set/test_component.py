"""build_training_set: compiles alone as a reusable component with the interface its README describes."""

from pathlib import Path

from components._contract import interface
from components.build_training_set.component import build_training_set


def test_build_training_set_is_a_reusable_component(tmp_path: Path) -> None:
    inputs, outputs = interface(build_training_set, tmp_path)
    assert inputs == {"feature_service": "STRING", "workspace": "STRING", "dataset": "system.Dataset"}
    assert outputs == {"metrics": "system.Metrics", "training_set": "system.Dataset"}
