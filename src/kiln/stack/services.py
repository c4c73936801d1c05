"""The local services `kiln up` runs for a workspace, built from its settings."""

from __future__ import annotations

import sys
from pathlib import Path

from kiln.stack.process import ServiceSpec
from kiln.workspace import Workspace


def mlflow_server(ws: Workspace) -> ServiceSpec:
    """MLflow tracking server and UI over the workspace's own tracking store."""
    s = ws.settings
    artifact_root = s.mlflow.artifact_root
    if "://" not in artifact_root:
        Path(artifact_root).mkdir(parents=True, exist_ok=True)
    return ServiceSpec(
        name="mlflow",
        command=[
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", s.mlflow.tracking_uri,
            "--default-artifact-root", artifact_root,
            "--host", s.services.mlflow.host,
            "--port", str(s.services.mlflow.port),
            "--workers", "1",
        ],
        host=s.services.mlflow.host,
        port=s.services.mlflow.port,
        health_path="/health",
        setting="services.mlflow.port",
        # The first start creates the tracking schema (about 20 s on 2 cores).
        start_timeout=180.0,
    )


def local_services(ws: Workspace) -> list[ServiceSpec]:
    """Every service of the local stack, in start order."""
    return [mlflow_server(ws)]
