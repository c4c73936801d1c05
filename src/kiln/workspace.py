"""A workspace: a folder with kiln.yaml and the folders each capability writes into."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from kiln.errors import WorkspaceError
from kiln.files import write_text_atomic
from kiln.settings import SETTINGS_FILE, Settings, load_settings

FOLDERS = ("data", "features", "models", "artifacts", "capture", "reports")
STATE_DIR = ".kiln"  # pid files and logs of local services
# Where a cluster mounts the workspace (the chart's volume, kiln.yaml from its ConfigMap) for every step and job.
CLUSTER_WORKSPACE = "/kiln/workspace"

SETTINGS_TEMPLATE = """\
# Kiln workspace settings. Every key can be overridden by a KILN_* environment variable,
# nested keys joined by "__" (for example KILN_SERVICES__MLFLOW__PORT=5001).
#
# profile: local   - everything embedded on this machine (SQLite, parquet, local processes)
# profile: cluster - MLflow server, Redis/PostgreSQL feature store, S3 artifacts, KServe
profile: {profile}

# Ports of the local services `kiln up` starts (loopback only).
services:
  mlflow:
    host: 127.0.0.1
    port: 5000
  feature_server:          # Feast's HTTP feature server
    host: 127.0.0.1
    port: 6566
  artifacts:               # the distribution point edge devices pull compiled models from
    host: 127.0.0.1
    port: 6580
  evidently:               # Evidently's UI: the history of monitor runs
    host: 127.0.0.1
    port: 8000
  studio:                  # Kiln Studio, the web console (actions need the token in KILN_STUDIO_TOKEN)
    host: 127.0.0.1
    port: 8070

# Uncomment to override what the profile picks, for example:
# mlflow:
#   tracking_uri: http://127.0.0.1:5000
# features:
#   online_store:
#     type: redis            # sqlite | redis
#     connection_string: 127.0.0.1:6379
#   registry:
#     type: sql              # file | sql
#     path: postgresql+psycopg2://postgres@127.0.0.1:5432/feast
"""


@dataclass(frozen=True)
class Workspace:
    """A workspace root and its settings."""

    root: Path
    settings: Settings

    def folder(self, name: str) -> Path:
        return self.root / name

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR


class NewWorkspace(NamedTuple):
    """A workspace `init_workspace` made or completed, and the paths it created (none when it was whole)."""

    workspace: Workspace
    created: list[Path]

    def to_dict(self) -> dict[str, Any]:
        return {"workspace": str(self.workspace.root), "profile": self.workspace.settings.profile,
                "created": [str(p) for p in self.created]}


def init_workspace(root: Path, profile: str = "local") -> NewWorkspace:
    """Create (or complete) a workspace at ``root``; returns it and the paths it created.

    An existing kiln.yaml is kept as it is, so running init twice changes nothing.
    """
    if profile not in ("local", "cluster"):
        raise WorkspaceError(f"unknown profile '{profile}'", hint="use --profile local or --profile cluster")
    root = root.expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise WorkspaceError(f"{root} exists and is not a folder", hint="choose another path for the workspace")
    created: list[Path] = []
    settings_file = root / SETTINGS_FILE
    if settings_file.exists():
        load_settings(root)  # an existing, broken kiln.yaml is reported, not overwritten
    try:
        for name in (*FOLDERS, STATE_DIR):
            path = root / name
            if not path.exists():
                path.mkdir(parents=True)
                created.append(path)
        if not settings_file.exists():
            write_text_atomic(settings_file, SETTINGS_TEMPLATE.format(profile=profile))
            created.append(settings_file)
    except OSError as exc:
        raise WorkspaceError(f"{root}: cannot make the workspace there: {exc.strerror}",
                             hint="choose a folder you may write to") from None
    return NewWorkspace(Workspace(root, load_settings(root)), created)


def find_workspace_root(start: Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (or KILN_WORKSPACE) holding kiln.yaml."""
    env = os.environ.get("KILN_WORKSPACE")
    if env:
        return Path(env).expanduser().resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / SETTINGS_FILE).is_file():
            return folder
    return None


def open_workspace(path: Path | None = None) -> Workspace:
    """The workspace at ``path`` (or found from the current folder); an error if there is none."""
    root = path.expanduser().resolve() if path else find_workspace_root()
    if root is None or not (root / SETTINGS_FILE).is_file():
        where = root or Path.cwd()
        raise WorkspaceError(
            f"no Kiln workspace at {where} (no {SETTINGS_FILE} there or above)",
            hint="create one with `kiln init DIR`, then pass --workspace DIR or cd into it",
        )
    return Workspace(root, load_settings(root))


def require_local(ws: Workspace) -> Workspace:
    """``ws``, which must use the local profile (its services run as processes here)."""
    if ws.settings.profile != "local":
        raise WorkspaceError(f"{ws.root}: profile is '{ws.settings.profile}'; this command runs local services only",
                             hint="on a cluster the services are installed by the Helm chart (README: cluster)")
    return ws
