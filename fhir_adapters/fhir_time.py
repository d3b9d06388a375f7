"""FHIR date/dateTime/instant strings -> timezone-aware UTC ``datetime``.

A partial value (``"2150"``, ``"2150-03"``, ``"2150-03-03"``) names a whole period, and
which end of it to take depends on what the time is used for:

* **anchors** (``Encounter.period.start``, ``birthDate``, ``deceasedDateTime``) take the
  START of the period -- ``parse_fhir_datetime``;
* **input times** (Observation ``effective[x]`` / ``issued``, note dates, imaging study
  times) take the END -- ``parse_fhir_input_time``. A note dated "2150-03-03" may have
  been written at 23:00 that day; reading it as 00:00 would let it into a window that
  ends at 08:00 that day, i.e. leak information from after the prediction time. The
  end of the period is the earliest moment the input is certainly available.
"""

from __future__ import annotations

from calendar import monthrange
from datetime import UTC, date, datetime, time
from typing import Literal

__all__ = ["PartialEdge", "parse_fhir_datetime", "parse_fhir_input_time"]

PartialEdge = Literal["start", "end"]
_LAST_INSTANT = time(23, 59, 59, 999999)
_YEAR, _YEAR_MONTH, _DATE = 4, 7, 10  # lengths of the partial forms


def _partial_day(value: str, edge: PartialEdge) -> date:
    """The first or last day of a ``YYYY`` / ``YYYY-MM`` / ``YYYY-MM-DD`` value."""
    year = int(value[:4])
    if len(value) == _YEAR:
        return date(year, 1, 1) if edge == "start" else date(year, 12, 31)
    month = int(value[5:7])
    if len(value) == _YEAR_MONTH:
        day = 1 if edge == "start" else monthrange(year, month)[1]
        return date(year, month, day)
    return date.fromisoformat(value)


def parse_fhir_datetime(value: object, *, edge: PartialEdge = "start") -> datetime | None:
    """Parse a FHIR ``date``/``dateTime``/``instant``; ``None`` when absent or unparsable.

    A partial date becomes the first (``edge="start"``) or last (``edge="end"``) instant
    of its period, in UTC. A time without an offset (not valid FHIR, but common) is UTC.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        if len(value) in (_YEAR, _YEAR_MONTH, _DATE):
            day = _partial_day(value, edge)
            moment = _LAST_INSTANT if edge == "end" else time(0)
            return datetime.combine(day, moment, tzinfo=UTC)
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def parse_fhir_input_time(value: object) -> datetime | None:
    """The time of a model INPUT: a partial date counts as the end of its period."""
    return parse_fhir_datetime(value, edge="end")
