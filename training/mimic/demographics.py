"""MIMIC-IV patients/admissions rows -> ``Demographics`` (the spec's vocabularies).

The text -> category maps live in ``moe_core.feature_catalog`` so the FHIR path maps
the same way. MIMIC-IV keeps race and ethnicity in one field (``admissions.race``):
Hispanic/Latino entries give ethnicity ``hispanic`` (race unknown); any other entry
with a known race gives ``not_hispanic``; unknown/declined/other leave both unknown.

Race is a patient attribute (as in FHIR), but MIMIC-IV records it per admission and
it can differ between a patient's admissions: ``patient_race`` picks the earliest
admission's entry that maps to a known category (else the earliest entry).

Age: MIMIC-IV publishes ``anchor_age`` (age during ``anchor_year``), not a birth
date. Both the cohort builder and the FHIR exporter use the birth date it implies
(``mimic_birth_date``) and count fractional years from it, so both paths agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from moe_core.feature_catalog import (
    admission_type_category,
    ethnicity_category,
    race_category,
    sex_category,
)
from moe_core.records import UNKNOWN, Demographics

__all__ = [
    "DAYS_PER_YEAR",
    "age_at_admission",
    "mimic_birth_date",
    "mimic_demographics",
    "mimic_ethnicity",
    "patient_race",
    "stay_end_sql",
]

DAYS_PER_YEAR = 365.2425  # the Gregorian mean year, as the FHIR adapter uses for birthDate


def mimic_birth_date(anchor_age: int, anchor_year: int) -> date:
    """The birth date MIMIC-IV implies: 1 January of ``anchor_year - anchor_age``."""
    return date(int(anchor_year) - int(anchor_age), 1, 1)


def age_at_admission(
    anchor_age: int | None, anchor_year: int | None, admit: datetime
) -> float | None:
    """Age in fractional years at ``admit``: days since ``mimic_birth_date`` / 365.2425."""
    if anchor_age is None or anchor_year is None:
        return None
    return (admit.date() - mimic_birth_date(anchor_age, anchor_year)).days / DAYS_PER_YEAR


def patient_race(texts_by_admission_time: Sequence[str | None]) -> str | None:
    """One race text per patient: the first that maps to a known category, else the first."""
    for text in texts_by_admission_time:
        if race_category(text) != UNKNOWN:
            return text
    return next((t for t in texts_by_admission_time if t), None)


def stay_end_sql(dischtime: str, deathtime: str) -> str:
    """SQL for the end of a hospital stay: ``dischtime``, or a later in-hospital ``deathtime``.

    MIMIC-IV records some in-hospital deaths with a midnight ``dischtime`` hours before
    the ``deathtime`` of the same day; the stay ends at the death.
    """
    return f"CASE WHEN {deathtime} > {dischtime} THEN {deathtime} ELSE {dischtime} END"


def mimic_ethnicity(race_text: str | None) -> str:
    """Ethnicity from MIMIC's combined race field (see the module docstring)."""
    if ethnicity_category(race_text) == "hispanic":
        return "hispanic"
    return "not_hispanic" if race_category(race_text) not in (UNKNOWN, "other") else UNKNOWN


def mimic_demographics(
    age: float | None, gender: str | None, race_text: str | None, admission_type: str | None
) -> Demographics:
    """Static features of one admission."""
    return Demographics(
        age=age,
        sex=sex_category(gender),
        race=race_category(race_text),
        ethnicity=mimic_ethnicity(race_text),
        admission_type=admission_type_category(admission_type),
    )
