"""deploy_endpoint: compiles alone as a reusable component with the interface its README describes."""

from pathlib import Path

from components._contract import interface
from components.deploy_endpoint.component import deploy_endpoint


def test_deploy_endpoint_is_a_reusable_component(tmp_path: Path) -> None:
    inputs, outputs = interface(deploy_endpoint, tmp_path)
    assert inputs == {
        "bake_seconds": "NUMBER_DOUBLE",
        "canary_percent": "NUMBER_DOUBLE",
        "endpoint": "STRING",
        "override_reason": "STRING",
        "promote_champion": "BOOLEAN",
        "version": "STRING",
        "workspace": "STRING",
    }
    assert outputs == {"Output": "STRING"}


def test_an_unregistered_version_fails_the_step_naming_it_and_starts_nothing(tmp_path: Path) -> None:
    import pytest

    from kiln.workflow.local_run import PipelineFailed, run_local
    from kiln.workspace import init_workspace

    ws, _ = init_workspace(tmp_path / "ws")
    with pytest.raises(PipelineFailed, match=r"task deploy-endpoint failed: .*churn"):
        run_local(ws, deploy_endpoint, {"workspace": str(ws.root), "version": "churn/7", "endpoint": "e1"})
    assert not list((ws.root / ".kiln").glob("endpoints/*/endpoint.json"))
