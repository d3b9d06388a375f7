"""Patient -> ``Demographics`` (age at the encounter, sex, US Core race/ethnicity) and death."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from fhir_adapters.fhir_keys import US_CORE_ETHNICITY_URL, US_CORE_RACE_URL
from fhir_adapters.fhir_time import parse_fhir_datetime
from moe_core.feature_catalog import ethnicity_category, race_category, sex_category
from moe_core.records import UNKNOWN, Demographics

__all__ = ["age_at", "death_time", "demographics"]

_DAYS_PER_YEAR = 365.2425


def _birth_date(patient: Mapping[str, Any]) -> date | None:
    born = parse_fhir_datetime(patient.get("birthDate"))
    return born.date() if born else None


def age_at(patient: Mapping[str, Any], when: datetime) -> float | None:
    """Age in (fractional) years at ``when``; ``None`` without a usable birthDate."""
    born = _birth_date(patient)
    if born is None:
        return None
    days = (when.date() - born).days
    return days / _DAYS_PER_YEAR if days >= 0 else None


def death_time(patient: Mapping[str, Any]) -> datetime | None:
    """``deceasedDateTime`` as UTC; ``None`` when alive or only ``deceasedBoolean`` is given."""
    return parse_fhir_datetime(patient.get("deceasedDateTime"))


def _us_core_category(patient: Mapping[str, Any], url: str) -> str | None:
    """First ombCategory code of a US Core race/ethnicity extension, else its text."""
    for ext in patient.get("extension") or ():
        if not isinstance(ext, Mapping) or ext.get("url") != url:
            continue
        text = None
        for sub in ext.get("extension") or ():
            if not isinstance(sub, Mapping):
                continue
            if sub.get("url") == "ombCategory":
                coding = sub.get("valueCoding") or {}
                if isinstance(coding, Mapping) and coding.get("code"):
                    return str(coding["code"])
            elif sub.get("url") == "text" and isinstance(sub.get("valueString"), str):
                text = sub["valueString"]
        return text
    return None


def demographics(
    patient: Mapping[str, Any] | None,
    at: datetime,
    admission_type: str = UNKNOWN,
) -> Demographics:
    """Static features of ``patient`` at time ``at`` (all UNKNOWN without a Patient)."""
    if patient is None:
        return Demographics(admission_type=admission_type)
    return Demographics(
        age=age_at(patient, at),
        sex=sex_category(patient.get("gender")),
        race=race_category(_us_core_category(patient, US_CORE_RACE_URL)),
        ethnicity=ethnicity_category(_us_core_category(patient, US_CORE_ETHNICITY_URL)),
        admission_type=admission_type,
    )
