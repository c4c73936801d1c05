"""ingest_features: compiles alone as a reusable component with the interface its README describes."""

from pathlib import Path

from components._contract import interface
from components.ingest_features.component import ingest_features


def test_ingest_features_is_a_reusable_component(tmp_path: Path) -> None:
    inputs, outputs = interface(ingest_features, tmp_path)
    assert inputs == {"workspace": "STRING", "dataset": "system.Dataset"}
    assert outputs == {"Output": "STRING", "metrics": "system.Metrics"}
