"""Materialization: the online store rebuilt from the offline store's newest values (Feast materialize)."""

from __future__ import annotations

import contextlib
import sys
from datetime import UTC, datetime
from typing import Any

from kiln.errors import InputError
from kiln.features.repo import open_store
from kiln.workspace import Workspace


def materialize(ws: Workspace, start: datetime | None = None, end: datetime | None = None) -> dict[str, Any]:
    """Between ``start`` and ``end`` (default now); without ``start``, from where the last run ended."""
    end = end or datetime.now(UTC)
    if start is not None and start >= end:
        raise InputError(f"--start {start:%Y-%m-%d %H:%M} is not before --end {end:%Y-%m-%d %H:%M}")
    store = open_store(ws)
    views = sorted(v.name for v in store.list_feature_views())
    # Feast prints its progress on stdout; it goes to stderr so stdout can carry --json.
    with contextlib.redirect_stdout(sys.stderr):
        if start is None:
            store.materialize_incremental(end_date=end)
        else:
            store.materialize(start_date=start, end_date=end)
    return {"feature_views": views, "start": start.isoformat() if start else "incremental", "end": end.isoformat()}
