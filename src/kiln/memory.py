"""Handing freed heap memory back to the operating system.

glibc's malloc keeps the memory a burst of allocations grew (a backlog of queued requests, a large batch of records)
after it is freed, so a long-running server's resident size stays at its highest point. ``release_freed`` asks it to
return what it can; elsewhere (another C library) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed() -> bool:
    """Return freed heap memory to the operating system; whether any was returned."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
