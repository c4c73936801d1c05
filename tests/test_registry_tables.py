"""Registry reads from the SQLite store's tables answer as MLflow's client does, and step aside when they cannot."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from kiln.registry.tables import KNOWN_REVISION, read_versions
from kiln.registry.versions import CHALLENGER, CHAMPION, list_versions, stored_versions
from kiln.tracking import client
from kiln.workspace import Workspace, init_workspace, open_workspace


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A workspace whose registry holds two models (with versions, tags, aliases and a deleted-looking gap), and a
    prompt, written by MLflow itself."""
    root = tmp_path_factory.mktemp("registry") / "ws"
    init_workspace(root)
    ws = open_workspace(root)
    c = client(ws)
    for name, versions in (("zeta", 1), ("alpha", 3)):
        c.create_registered_model(name)
        for i in range(versions):
            c.create_model_version(name, f"file:///models/{name}/{i}", run_id=None,
                                   tags={"kiln.family": "lgbm", "kiln.approval_status": "Approved" if i else "x"})
    c.set_registered_model_alias("alpha", CHAMPION, "1")
    c.set_registered_model_alias("alpha", CHALLENGER, "3")
    c.set_registered_model_alias("alpha", "previous", "1")
    c.set_model_version_tag("alpha", "2", "kiln.approval_history", '[{"event": "registered"}]')
    c.delete_model_version("alpha", "2")
    import mlflow.genai

    mlflow.genai.register_prompt("greeting", "Hello {{name}}")  # prompts share the registry's tables
    return ws


def test_the_store_mlflow_writes_is_at_the_revision_read_here(registry: Workspace) -> None:
    path = registry.root / "models" / "mlflow.db"
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(KNOWN_REVISION,)]


@pytest.mark.parametrize("name", [None, "alpha", "zeta", "missing"])
def test_the_tables_read_as_mlflow_searches(registry: Workspace, name: str | None) -> None:
    fast = read_versions(registry.settings.mlflow.tracking_uri, name)
    assert fast is not None
    if name == "missing":
        assert fast == []
        return
    assert fast == stored_versions(registry, name)
    expected = {None: ["alpha/3", "alpha/1", "zeta/1"], "alpha": ["alpha/3", "alpha/1"], "zeta": ["zeta/1"]}
    assert [f"{v.name}/{v.version}" for v in fast] == expected[name]  # no prompt, no deleted version
    if name != "zeta":
        assert {v.version: v.aliases for v in fast if v.name == "alpha"} == {"3": [CHALLENGER],
                                                                             "1": [CHAMPION, "previous"]}


def test_another_revision_or_store_is_read_through_mlflow(registry: Workspace, tmp_path: Path) -> None:
    copy = tmp_path / "mlflow.db"
    shutil.copy(registry.root / "models" / "mlflow.db", copy)
    with sqlite3.connect(copy) as db:
        db.execute("UPDATE alembic_version SET version_num = 'another'")
    assert read_versions(f"sqlite:///{copy}") is None
    assert read_versions(f"sqlite:///{tmp_path / 'absent.db'}") is None
    assert read_versions("http://127.0.0.1:5000") is None
    assert [v.version for v in list_versions(registry, "alpha")] == ["3", "1"]
