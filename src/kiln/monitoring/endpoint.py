"""What a monitor reads of an endpoint (the model version it serves, where its capture is) and where it writes."""

from __future__ import annotations

from pathlib import Path

from kiln.errors import InputError
from kiln.registry.versions import get_version
from kiln.serving.local import _capture_root, list_endpoints, read_state
from kiln.serving.spec import served_name
from kiln.storage import is_s3
from kiln.workspace import Workspace


def served_version(ws: Workspace, endpoint: str, model: str | None = None) -> str:
    """NAME/VERSION of ``model`` (NAME/VERSION or NAME@ALIAS) when given, else the one the local endpoint's primary
    variant (its first) serves. An endpoint served elsewhere (KServe in a cluster) needs ``model``."""

    if model is not None:
        info = get_version(ws, model)
        return f"{info.name}/{info.version}"
    if endpoint not in list_endpoints(ws) and ws.settings.serving.type != "local":
        raise InputError(f"endpoint {endpoint} is served by {ws.settings.serving.type}, not here: say which model "
                         f"it serves", hint=f"--model {endpoint}@champion, or NAME/VERSION")
    return read_state(ws, endpoint).primary.model.removeprefix("models:/")


def version_records(ws: Workspace, endpoint: str, model: str) -> str | None:
    """The records a monitor of ``model`` (NAME/VERSION) reads of a local multi-model endpoint: those its version
    answered (each version is judged against its own baseline); None for any other endpoint (all of them)."""
    if endpoint not in list_endpoints(ws) or read_state(ws, endpoint).spec.mode != "multi-model":
        return None
    return served_name(f"models:/{model}")


def capture_root(ws: Workspace, endpoint: str) -> Path | str:
    """Where the endpoint's capture is (a folder, or an s3:// prefix): its spec's destination for a local endpoint,
    else the workspace's capture store (where a cluster's capture collector writes)."""
    if endpoint not in list_endpoints(ws) and ws.settings.serving.type != "local":
        return workspace_capture(ws)
    root = _capture_root(ws, read_state(ws, endpoint).spec)
    if root is None:
        raise InputError(f"endpoint {endpoint} captures nothing (capture.enabled is false): nothing to monitor",
                         hint="turn capture on in its spec and deploy it again")
    return root if is_s3(root) else Path(root)


def workspace_capture(ws: Workspace) -> Path | str:
    """The workspace's capture store: a folder, or an s3:// prefix."""
    store = ws.settings.capture
    return store.uri if store.type == "s3" else Path(store.path)


def reports_folder(ws: Workspace, endpoint: str) -> Path:
    """The endpoint's monitor runs: one folder each."""
    return ws.folder("reports") / "monitor" / endpoint
