"""baseline_monitor: compiles alone as a reusable component with the interface its README describes."""

from pathlib import Path

from components._contract import interface
from components.baseline_monitor.component import baseline_monitor


def test_baseline_monitor_is_a_reusable_component(tmp_path: Path) -> None:
    inputs, outputs = interface(baseline_monitor, tmp_path)
    assert inputs == {"version": "STRING", "workspace": "STRING"}
    assert outputs == {"Output": "STRING", "metrics": "system.Metrics"}
