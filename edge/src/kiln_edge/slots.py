"""Two install slots and an `active` link between them: a new bundle goes into the inactive slot, and the link
is replaced in one rename, so a crash at any moment leaves either the old model or the new one active."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

SLOTS = ("a", "b")


class Slots:
    def __init__(self, state: Path) -> None:
        self.state = Path(state)
        self.root = self.state / "slots"
        self.link = self.state / "active"
        self.root.mkdir(parents=True, exist_ok=True)

    def active_name(self) -> str | None:
        if not self.link.is_symlink():
            return None
        name = Path(os.readlink(self.link)).name
        return name if name in SLOTS and (self.root / name).is_dir() else None

    def folder(self, name: str) -> Path:
        return self.root / name

    def inactive_name(self) -> str:
        active = self.active_name()
        return "b" if active == "a" else "a"

    def manifest(self, name: str | None) -> dict[str, Any] | None:
        if name is None:
            return None
        try:
            return json.loads((self.folder(name) / "manifest.json").read_text())
        except (OSError, ValueError):
            return None

    def install(self, download: Path) -> str:
        """Move a verified download into the inactive slot (replacing what was there); returns the slot."""
        name = self.inactive_name()
        target = self.folder(name)
        shutil.rmtree(target, ignore_errors=True)
        download.rename(target)
        return name

    def activate(self, name: str) -> None:
        """Point `active` at slot ``name`` atomically."""
        tmp = self.state / ".active.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(Path("slots") / name, tmp)
        os.replace(tmp, self.link)
