"""Progress of long work: a function that takes one line saying what is being done now."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

Progress: TypeAlias = Callable[[str], None]


def no_progress(message: str) -> None:
    """Report nothing: the default where a caller gives no progress function."""

