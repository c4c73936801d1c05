"""run_monitor: compiles alone as a reusable component with the interface its README describes."""

from pathlib import Path

from components._contract import interface
from components.run_monitor.component import run_monitor


def test_run_monitor_is_a_reusable_component(tmp_path: Path) -> None:
    inputs, outputs = interface(run_monitor, tmp_path)
    assert inputs == {"endpoint": "STRING", "since": "STRING", "workspace": "STRING"}
    assert outputs == {"Output": "NUMBER_INTEGER", "metrics": "system.Metrics", "report": "system.HTML"}
