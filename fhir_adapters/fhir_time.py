"""FHIR date/dateTime/instant strings -> timezone-aware UTC ``datetime``."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["parse_fhir_datetime"]


def parse_fhir_datetime(value: object) -> datetime | None:
    """Parse a FHIR ``date``/``dateTime``/``instant``; ``None`` when absent or unparsable.

    Partial dates (``"2020"``, ``"2020-03"``) become the first instant of the period.
    A time without an offset (not valid FHIR, but common) is taken as UTC.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        if len(value) == 4:
            dt = datetime(int(value), 1, 1)
        elif len(value) == 7:
            dt = datetime(int(value[:4]), int(value[5:7]), 1)
        else:
            dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)
