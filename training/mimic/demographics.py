"""MIMIC-IV patients/admissions rows -> ``Demographics`` (the spec's vocabularies).

The text -> category maps live in ``moe_core.feature_catalog`` so the FHIR path maps
the same way. MIMIC-IV keeps race and ethnicity in one field (``admissions.race``):
Hispanic/Latino entries give ethnicity ``hispanic`` (race unknown); any other entry
with a known race gives ``not_hispanic``; unknown/declined/other leave both unknown.
"""

from __future__ import annotations

from moe_core.feature_catalog import (
    admission_type_category,
    ethnicity_category,
    race_category,
    sex_category,
)
from moe_core.records import UNKNOWN, Demographics

__all__ = ["age_at_admission", "mimic_demographics", "mimic_ethnicity"]


def age_at_admission(
    anchor_age: float | None, anchor_year: int | None, admit_year: int
) -> float | None:
    """MIMIC-IV age: ``anchor_age`` plus the years from ``anchor_year`` to the admission."""
    if anchor_age is None or anchor_year is None:
        return None
    return float(anchor_age) + float(admit_year - anchor_year)


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
