"""Kiln's images and a Docker engine for the tests that run containers.

`make test` builds the images and starts an engine before the suite (scripts/docker-engine.sh, scripts/images.sh);
run alone, the `images` fixture does the same, and stops an engine it started when the session ends.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "scripts" / "docker-engine.sh"
STATE = Path(os.environ.get("KILN_CACHE", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kiln"))
LOCK = STATE / "images.lock"
STARTED_HERE = STATE / "docker" / "started-by-tests"  # the session's end stops that engine (stop_engine)


@dataclass(frozen=True)
class Images:
    platform: str
    edge: str


def version(pyproject: Path) -> str:
    for line in pyproject.read_text().splitlines():
        if line.startswith("version = "):
            return line.split('"')[1]
    raise AssertionError(f"no version in {pyproject}")


def docker(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The docker command; a failure shows its output."""
    res = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} exited {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def build_images() -> Images:
    """The platform and edge images, built (or found up to date) with a Docker engine answering; one worker at a
    time starts the engine or builds."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = subprocess.run([str(ENGINE), "up"], capture_output=True, text=True, timeout=600)
        assert started.returncode == 0, started.stderr
        if started.stdout.strip().endswith("started"):
            STARTED_HERE.touch()
        built = subprocess.run([str(ROOT / "scripts" / "images.sh")], capture_output=True, text=True, timeout=1800)
        assert built.returncode == 0, built.stderr[-3000:]
    return Images(platform=f"kiln:{version(ROOT / 'pyproject.toml')}",
                  edge=f"kiln-edge:{version(ROOT / 'edge' / 'pyproject.toml')}")


def stop_engine() -> None:
    """Stop the engine a test session started (called once, when the whole session ends)."""
    if STARTED_HERE.exists():
        subprocess.run([str(ENGINE), "down"], capture_output=True, timeout=120)
        STARTED_HERE.unlink(missing_ok=True)
