"""MLflow, the one place Kiln talks to it: tracking and registry URIs from settings, experiments, runs."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from kiln import __version__
from kiln.errors import ServiceError
from kiln.settings import is_uri
from kiln.workspace import Workspace

if TYPE_CHECKING:
    from mlflow import MlflowClient


def client(ws: Workspace) -> "MlflowClient":
    """An MlflowClient on the workspace's tracking store; the fluent API is pointed at it too."""
    import mlflow
    from mlflow import MlflowClient

    uri = ws.settings.mlflow.tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(ws: Workspace, name: str) -> str:
    """The id of experiment ``name``, created (with its artifacts under ``mlflow.artifact_root``) when new."""
    c = client(ws)
    try:
        found = c.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        root = ws.settings.mlflow.artifact_root
        location = root.rstrip("/") if is_uri(root) else Path(root).resolve().as_uri()
        return c.create_experiment(name, artifact_location=f"{location}/{name}")
    except Exception as exc:  # engine errors become Kiln's at this boundary
        if type(exc).__name__ == "MlflowException" or isinstance(exc, OSError):
            raise ServiceError(f"MLflow at {ws.settings.mlflow.tracking_uri}: {exc}",
                               hint="`kiln doctor` checks the tracking store") from exc
        raise


def code_version() -> str:
    """Kiln's version, and the git commit it runs from when it runs from a checkout."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"kiln {__version__}" + (f" ({commit})" if commit else "")
