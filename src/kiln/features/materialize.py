"""Materialization: the online store rebuilt from the offline store's newest values (Feast materialize)."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

from kiln.errors import InputError
from kiln.features.repo import open_store
from kiln.workspace import Workspace


@dataclass(frozen=True)
class Materialized:
    """The feature views loaded online, from ``start`` (None: from where the last run ended) up to ``end``."""

    feature_views: list[str]
    start: datetime | None
    end: datetime

    def to_dict(self) -> dict[str, object]:
        return {"feature_views": self.feature_views, "start": self.start.isoformat() if self.start else "incremental",
                "end": self.end.isoformat()}


def parse_when(text: str | None, flag: str) -> datetime | None:
    """A date or time given with the option ``flag`` (UTC unless it names its zone), or None when not given."""
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"{flag} '{text}': expected a date or time like 2026-01-31 or 2026-01-31T12:00") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def materialize(ws: Workspace, start: datetime | None = None, end: datetime | None = None) -> Materialized:
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
    return Materialized(feature_views=views, start=start, end=end)
