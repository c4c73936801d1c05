"""Registry reads straight from a SQLite tracking store's tables, for commands that only look.

MLflow's client costs seconds on every call (its import, then its store's checks); these four tables read in
milliseconds. Only a store at the schema revision the pinned MLflow writes is read here: any other store, or
another revision, returns None and is read through MLflow. A test keeps both answers equal.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

KNOWN_REVISION = "dc11669786a5"  # the head of the pinned MLflow's registry migrations (the test checks it)
WORKSPACE = "default"  # MLflow's single-tenant workspace
PROMPT_TAG = "mlflow.prompt.is_prompt"  # prompts share the table; MLflow's search leaves them out
DELETED = "Deleted_Internal"  # versions MLflow is deleting, which its search leaves out


@dataclass(frozen=True)
class StoredVersion:
    """One model version as the registry holds it."""

    name: str
    version: str
    run_id: str | None
    source: str
    creation_timestamp: int
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?")[0])


def read_versions(uri: str, name: str | None = None) -> list[StoredVersion] | None:
    """Every version of ``name`` (or of every registered model but prompts), by name then newest first; None when
    this store is not one read here (not SQLite, missing, or another schema revision)."""
    path = sqlite_path(uri)
    if path is None or not path.is_file():
        return None
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            return _read(db, name)
    except sqlite3.Error:
        return None  # locked, or not the schema expected: MLflow's own read decides


def _read(db: sqlite3.Connection, name: str | None) -> list[StoredVersion] | None:
    if db.execute("SELECT version_num FROM alembic_version").fetchall() != [(KNOWN_REVISION,)]:
        return None
    names = [row[0] for row in db.execute(
        "SELECT name FROM registered_models WHERE workspace = ? AND name NOT IN (SELECT name FROM "
        "registered_model_tags WHERE workspace = ? AND key = ? AND lower(value) = 'true') ORDER BY name",
        (WORKSPACE, WORKSPACE, PROMPT_TAG))]
    if name is not None:
        names = [n for n in names if n == name]
    versions = []
    for model in names:
        aliases: dict[int, list[str]] = {}
        for alias, number in db.execute("SELECT alias, version FROM registered_model_aliases WHERE workspace = ? "
                                        "AND name = ?", (WORKSPACE, model)):
            aliases.setdefault(int(number), []).append(alias)
        tags: dict[int, dict[str, str]] = {}
        for key, value, number in db.execute("SELECT key, value, version FROM model_version_tags WHERE "
                                             "workspace = ? AND name = ?", (WORKSPACE, model)):
            tags.setdefault(int(number), {})[key] = value
        rows = db.execute("SELECT version, run_id, source, creation_time FROM model_versions WHERE workspace = ? "
                          "AND name = ? AND (current_stage IS NULL OR current_stage != ?) ORDER BY version DESC",
                          (WORKSPACE, model, DELETED))
        versions += [StoredVersion(name=model, version=str(number), run_id=run_id, source=source or "",
                                   creation_timestamp=int(created or 0), tags=tags.get(int(number), {}),
                                   aliases=sorted(aliases.get(int(number), [])))
                     for number, run_id, source, created in rows]
    return versions
