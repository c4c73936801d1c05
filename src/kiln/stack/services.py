"""The local services `kiln up` runs for a workspace, built from its settings."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

from kiln.features.repo import apply_if_changed, repo_path
from kiln.monitoring.history import evidently_folder
from kiln.process import ServiceSpec
from kiln.settings import is_uri
from kiln.workspace import Workspace


def mlflow_server(ws: Workspace) -> ServiceSpec:
    """MLflow tracking server and UI over the workspace's own tracking store."""
    s = ws.settings
    artifact_root = s.mlflow.artifact_root
    if not is_uri(artifact_root):
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
        # MLflow's server-side jobs (GenAI scorers, prompt optimization) start seven more processes Kiln never uses.
        env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )


def feature_server(ws: Workspace) -> ServiceSpec:
    """Feast's HTTP feature server over the workspace's feature repo (online reads on loopback)."""

    s = ws.settings.services.feature_server
    return ServiceSpec(
        name="features",
        command=[
            sys.executable, "-m", "kiln.stack.feast_serve", "-c", str(repo_path(ws)), "serve",
            "-h", s.host, "-p", str(s.port), "--no-access-log",
            "--max-requests", "0",  # Feast's default restarts the worker every 1,000 requests
        ],
        host=s.host,
        port=s.port,
        health_path="/health",
        setting="services.feature_server.port",
        start_timeout=120.0,
        # Feast's runtime type checks cost about 3 ms a request; optimized mode turns them off.
        env={"PYTHONOPTIMIZE": "1"},
        prepare=partial(_prepare_feature_repo, ws),
    )


def _prepare_feature_repo(ws: Workspace) -> None:
    """The server needs a registry: apply the repo first (a no-op when nothing changed)."""

    apply_if_changed(ws)


def artifact_server(ws: Workspace) -> ServiceSpec:
    """The distribution point: published compiled artifacts, device heartbeats and their samples."""
    s = ws.settings.services.artifacts
    return ServiceSpec(
        name="artifacts",
        command=[sys.executable, "-m", "kiln.fleet.server", "--workspace", str(ws.root),
                 "--host", s.host, "--port", str(s.port)],
        host=s.host,
        port=s.port,
        health_path="/v1/health",
        setting="services.artifacts.port",
        start_timeout=60.0,
    )


def evidently_ui(ws: Workspace) -> ServiceSpec:
    """Evidently's UI over the workspace's monitor history (one project per monitored endpoint)."""

    s = ws.settings.services.evidently
    folder = evidently_folder(ws)
    return ServiceSpec(
        name="evidently",
        command=[str(Path(sys.executable).with_name("evidently")), "ui", "--workspace", str(folder),
                 "--host", s.host, "--port", str(s.port)],
        host=s.host,
        port=s.port,
        health_path="/api/version",
        setting="services.evidently.port",
        start_timeout=90.0,
        env={"DO_NOT_TRACK": "1"},  # no usage reports from the UI
        prepare=lambda: folder.mkdir(parents=True, exist_ok=True),
    )


def studio(ws: Workspace) -> ServiceSpec:
    """Kiln Studio, the web console over the workspace (actions need the token settings' studio.token_env names)."""
    s = ws.settings.services.studio
    return ServiceSpec(
        name="studio",
        command=[sys.executable, "-m", "kiln.studio.app", "--workspace", str(ws.root), "--host", s.host,
                 "--port", str(s.port)],
        host=s.host,
        port=s.port,
        health_path="/health",
        setting="services.studio.port",
        start_timeout=60.0,
    )


def local_services(ws: Workspace) -> list[ServiceSpec]:
    """Every service of the local stack, in start order."""
    return [mlflow_server(ws), feature_server(ws), artifact_server(ws), evidently_ui(ws), studio(ws)]
