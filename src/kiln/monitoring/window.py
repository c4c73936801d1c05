"""Time windows in the CLI's words: ISO 8601 times, or durations ("90s", "15m", "1h", "2d") back from now."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kiln.errors import InputError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Window:
    """The time a monitor run covers: [since, until); no ``since`` is from the first captured request."""

    since: datetime | None
    until: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"since": self.since.isoformat() if self.since else None, "until": self.until.isoformat()}


def parse_duration(text: str, option: str) -> timedelta:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise InputError(f"{option} '{text}': expected a positive duration such as 90s, 15m, 1h or 2d")
    return timedelta(seconds=float(m.group(1)) * UNITS[m.group(2)])


def parse_time(text: str | None, option: str, now: datetime | None = None) -> datetime | None:
    """An ISO time (UTC when it names no zone) or a duration back from ``now``; None stays None."""
    if text is None:
        return None
    now = now or datetime.now(UTC)
    if re.fullmatch(r"\s*\d+(?:\.\d+)?\s*[smhd]\s*", text):
        return now - parse_duration(text, option)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(f"{option} '{text}': expected an ISO time (2026-11-22T10:00) or a duration (1h)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
