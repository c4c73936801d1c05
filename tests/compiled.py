"""A workspace with an MLP registered and compiled for x86_64 and aarch64, shared by the compile and edge tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import run_kiln
from tests.test_training import FEATURES, synthetic, write_set


@dataclass
class Compiled:
    root: Path
    ids: dict[str, str]  # target -> artifact id

    def bundle(self, target: str) -> Path:
        return self.root / "artifacts" / "compiled" / self.ids[target]


def ok(*args: str | Path, timeout: float = 600, isolated: bool = False) -> dict:
    res = run_kiln(*args, "--json", timeout=timeout, isolated=isolated)
    assert res.code == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


def register(root: Path, family: str, name: str = "toy") -> str:
    """Train ``family`` briefly on synthetic rows and register it; returns NAME/VERSION."""
    train = root / "train.parquet"
    if not train.exists():
        write_set(train, synthetic(), FEATURES)
    run = ok("train", "-t", train, "-f", family, "--iterations", "3", "-w", root)
    version = ok("models", "register", run["run_id"], "--name", name, "-w", root)
    return f"{name}/{version['version']['version']}"


def build(root: Path) -> Compiled:
    assert run_kiln("init", root).code == 0
    ref = register(root, "mlp")
    ids = {target: ok("compile", ref, "--target", target, "-w", root)["id"] for target in ("x86_64", "aarch64")}
    return Compiled(root=root, ids=ids)
