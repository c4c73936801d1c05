"""What a monitor reads of an endpoint: the model version it serves and where its capture is."""

from __future__ import annotations

from pathlib import Path

from kiln.errors import InputError
from kiln.serving.local import _capture_root, read_state
from kiln.serving.spec import EndpointSpec
from kiln.workspace import Workspace


def served_version(ws: Workspace, endpoint: str) -> str:
    """NAME/VERSION served by the endpoint's primary variant (its first)."""

    state = read_state(ws, endpoint)
    primary = state["spec"]["variants"][0]["name"]
    model = state["variants"][primary]["model"]
    return model.removeprefix("models:/")


def capture_root(ws: Workspace, endpoint: str) -> Path:
    state = read_state(ws, endpoint)
    root = _capture_root(ws, EndpointSpec.model_validate(state["spec"]))
    if root is None:
        raise InputError(f"endpoint {endpoint} captures nothing (capture.enabled is false): nothing to monitor",
                         hint="turn capture on in its spec and deploy it again")
    return Path(root)
