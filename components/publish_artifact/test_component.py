"""publish_artifact: compiles alone as a reusable component with the interface its README describes."""

from pathlib import Path

from components._contract import interface
from components.publish_artifact.component import publish_artifact


def test_publish_artifact_is_a_reusable_component(tmp_path: Path) -> None:
    inputs, outputs = interface(publish_artifact, tmp_path)
    assert inputs == {"artifact_id": "STRING", "workspace": "STRING"}
    assert outputs == {"Output": "STRING"}


def test_an_unknown_artifact_fails_the_step_naming_it_and_publishes_nothing(tmp_path: Path) -> None:
    import pytest

    from kiln.workflow.local_run import PipelineFailed, run_local
    from kiln.workspace import init_workspace

    ws, _ = init_workspace(tmp_path / "ws")
    with pytest.raises(PipelineFailed, match=r"task publish-artifact failed: .*churn-v9-x86_64-nope"):
        run_local(ws, publish_artifact, {"workspace": str(ws.root), "artifact_id": "churn-v9-x86_64-nope"})
    assert not (ws.root / "artifacts" / "published").exists()
