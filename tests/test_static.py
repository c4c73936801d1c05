"""Static checks the suite keeps: ruff over the repository, mypy (strict) over the library."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), str(ROOT / "edge" / "src")])}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)


def test_ruff_finds_nothing() -> None:
    res = _run(str(BIN / "ruff"), "check", "--no-cache", ".")
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]


def test_ruff_catches_an_engine_imported_at_module_top(tmp_path: Path) -> None:
    """The check is live: a library module importing MLflow at its top (seconds for every `kiln` command) fails."""
    probe = tmp_path / "probe_engine_at_top.py"
    probe.write_text('"""probe"""\n\nimport mlflow\n\n\ndef f() -> object:\n    return mlflow\n')
    res = _run(str(BIN / "ruff"), "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(probe))
    assert res.returncode == 1 and "TID253" in res.stdout, res.stdout


def test_mypy_strict_finds_nothing_in_the_library() -> None:
    # Its cache lives outside the repository, as the other one-time builds do: mypy checks each entry against the
    # file's content, so a fresh clone reuses what has not changed (a minute cold, seconds warm).
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kiln" / "mypy"
    res = _run(sys.executable, "-m", "mypy", "--cache-dir", str(cache))
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
