"""Quality-note reasons used by the FHIR adapters, and the per-patient tally of drops.

Per-resource problems that matter for one record (a value out of range, a bad unit)
become one ``QualityNote`` each; high-volume, expected noise (observation codes the
spec does not use, resource types the assembler ignores, duplicates) is counted and
summarised in a single note per record so the quality report stays readable.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from moe_core.records import QualityNote

__all__ = [
    "BAD_UNIT",
    "BAD_VALUE",
    "CENSORED_VALUE",
    "DISCHARGE_SUMMARY",
    "DUPLICATE",
    "IGNORED_STATUS",
    "IMAGE_FAILED",
    "MALFORMED",
    "NOTE_FALLBACK_CHARSET",
    "NOTE_UNREADABLE",
    "NO_PATIENT",
    "NO_TIME",
    "NO_VALUE",
    "OUT_OF_RANGE",
    "UNKNOWN_CODE",
    "summary_note",
]

BAD_UNIT = "bad unit"
BAD_VALUE = "unparsable value"
CENSORED_VALUE = "censored value"  # "<5", ">200": a bound, not a measurement
DISCHARGE_SUMMARY = "discharge summary excluded"
DUPLICATE = "duplicate resource"
IGNORED_STATUS = "ignored status"
IMAGE_FAILED = "image not retrieved"
MALFORMED = "malformed resource"
NOTE_UNREADABLE = "note text unreadable"
NOTE_FALLBACK_CHARSET = "note decoded with fallback charset"  # kept; a character may be off
NO_PATIENT = "no Patient resource"
NO_TIME = "no time"
NO_VALUE = "no value"
OUT_OF_RANGE = "value out of plausible range"
UNKNOWN_CODE = "unknown code"

_MAX_LISTED = 10


def summary_note(source: str, reason: str, counts: Counter[str]) -> QualityNote | None:
    """One note summarising ``counts`` (e.g. unknown LOINC codes); ``None`` when empty."""
    total = sum(counts.values())
    if not total:
        return None
    listed: Iterable[tuple[str, int]] = counts.most_common(_MAX_LISTED)
    detail = f"{total} total; " + ", ".join(f"{k} x{n}" for k, n in listed)
    if len(counts) > _MAX_LISTED:
        detail += f", ... ({len(counts) - _MAX_LISTED} more kinds)"
    return QualityNote(source=source, reason=reason, detail=detail)
