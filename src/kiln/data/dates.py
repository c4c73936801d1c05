"""Days as options give them: YYYY-MM-DD."""

from __future__ import annotations

from datetime import date, datetime

from kiln.errors import InputError


def parse_date(text: str | None, flag: str) -> date | None:
    """The day ``text`` names (given with the option ``flag``), or None when it is not given."""
    if text is None:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise InputError(f"{flag} '{text}': expected a date as YYYY-MM-DD") from None
