"""What a monitor reads of an endpoint (the model version it serves, where its capture is) and where it writes."""

from __future__ import annotations

from pathlib import Path

from kiln.errors import InputError
from kiln.serving.local import _capture_root, read_state
from kiln.workspace import Workspace


def served_version(ws: Workspace, endpoint: str) -> str:
    """NAME/VERSION served by the endpoint's primary variant (its first)."""

    return read_state(ws, endpoint).primary.model.removeprefix("models:/")


def capture_root(ws: Workspace, endpoint: str) -> Path:
    root = _capture_root(ws, read_state(ws, endpoint).spec)
    if root is None:
        raise InputError(f"endpoint {endpoint} captures nothing (capture.enabled is false): nothing to monitor",
                         hint="turn capture on in its spec and deploy it again")
    return Path(root)


def reports_folder(ws: Workspace, endpoint: str) -> Path:
    """The endpoint's monitor runs: one folder each."""
    return ws.folder("reports") / "monitor" / endpoint
