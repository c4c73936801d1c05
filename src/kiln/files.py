"""Files and folders written whole or not at all: built beside their target under a hidden name, then renamed.

A rename within one folder is atomic, so a reader finds the old content or the new one, never half of either; a
write that fails leaves the target as it was and nothing of its own behind. The hidden names are
``.NAME.tmp-XXXXXXXX`` (and ``.NAME.old-XXXXXXXX`` for a folder being replaced), unique per write, so writers in
other processes never share one.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _beside(target: Path, kind: str, suffix: str = "") -> Path:
    return target.with_name(f".{target.name}.{kind}-{uuid.uuid4().hex[:8]}{suffix}")


@contextmanager
def staged_file(target: Path, *, suffix: str = "") -> Iterator[Path]:
    """A path beside ``target`` to write to; it replaces ``target`` when the block ends, and is removed if it raises.

    ``suffix`` ends the temporary name, for writers that choose a format by extension (e.g. ``.yaml``). The parent
    folder is created if needed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = _beside(target, "tmp", suffix)
    try:
        yield stage
        os.replace(stage, target)
    finally:
        stage.unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one rename."""
    with staged_file(path) as stage:
        stage.write_bytes(data)


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename."""
    with staged_file(path) as stage:
        stage.write_text(text)


def write_json_atomic(path: Path, data: Any, *, indent: int | None = 2,
                      default: Callable[[Any], Any] | None = None) -> None:
    """Replace ``path`` with ``data`` as JSON (keys in their order, a newline at the end) in one rename.

    ``data`` is serialised before anything is written (``default`` converts what JSON cannot hold, as in
    ``json.dumps``), so a value that cannot be serialised raises and leaves ``path`` as it was.
    """
    write_text_atomic(path, json.dumps(data, indent=indent, default=default) + "\n")


@contextmanager
def staged_folder(target: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """A new, empty folder beside ``target`` to build in; it takes ``target``'s place when the block ends.

    If the block raises, the folder is removed and ``target`` is left as it was. An existing ``target`` is replaced
    when ``overwrite`` is true (moved aside, then removed once the new folder is in place); otherwise the block's
    work is discarded and FileExistsError is raised. The parent folder is created if needed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = _beside(target, "tmp")
    stage.mkdir()
    old: Path | None = None
    try:
        yield stage
        if target.exists() or target.is_symlink():
            if not overwrite:
                raise FileExistsError(errno.EEXIST, "already exists; not replaced", str(target))
            old = _beside(target, "old")
            target.rename(old)
        try:
            os.replace(stage, target)
        except BaseException:
            if old is not None:
                old.rename(target)
                old = None
            raise
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
