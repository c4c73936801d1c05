"""The layers stay one-way (kiln <- components <- pipelines; edge apart; inside kiln, base modules at the bottom and
the CLI on top), checked by import-linter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    res = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "5 kept, 0 broken" in res.stdout


def test_a_backwards_import_breaks_the_contract(tmp_path: Path) -> None:
    """The check is live: kiln importing a component, a capability importing one above it, and a new subpackage
    given no layer are each caught."""
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".venv", ".git", "demo-workspace", "__pycache__"))
    (copy / "components" / "probe.py").write_text('"""probe"""\n')
    (copy / "src" / "kiln" / "probe_backwards.py").write_text("import components.probe  # noqa\n")
    (copy / "src" / "kiln" / "training" / "probe_upwards.py").write_text("import kiln.serving.spec  # noqa\n")
    (copy / "src" / "kiln" / "unplaced").mkdir()
    (copy / "src" / "kiln" / "unplaced" / "__init__.py").write_text("")
    lint = Path(sys.executable).parent / "lint-imports"
    env = {"PYTHONPATH": f"{copy}:{copy / 'src'}:{copy / 'edge' / 'src'}", "PATH": "/usr/bin:/bin"}
    res = subprocess.run([str(lint), "--no-cache"], cwd=copy, capture_output=True, text=True, env=env)
    assert res.returncode != 0
    assert "kiln.probe_backwards -> components.probe" in res.stdout
    assert "kiln.training.probe_upwards -> kiln.serving.spec" in res.stdout
    assert "kiln.unplaced" in res.stdout
