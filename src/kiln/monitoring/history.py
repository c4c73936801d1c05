"""The Evidently workspace `evidently ui` shows: one project per endpoint, one snapshot per monitor report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln.workspace import Workspace


def evidently_folder(ws: Workspace) -> Path:
    return ws.folder("monitoring") / "evidently"


def add_snapshots(ws: Workspace, endpoint: str, snapshots: list[tuple[str, Any]]) -> str:
    """Store (name, snapshot) pairs in the endpoint's project; returns the project id."""
    from evidently.ui.workspace import Workspace as EvidentlyWorkspace

    workspace = EvidentlyWorkspace.create(str(evidently_folder(ws)))
    name = f"endpoint {endpoint}"
    found = workspace.search_project(name)
    project = found[0] if found else workspace.create_project(
        name, description=f"Kiln monitor runs of endpoint {endpoint}")
    for run_name, snapshot in snapshots:
        workspace.add_run(project.id, snapshot, name=run_name)
    return str(project.id)
