"""Encounter -> admission facts: anchor (period.start), class, discharge, disposition."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_adapters.errors import MalformedResourceError
from fhir_adapters.fhir_keys import INPATIENT_CLASS_CODES
from fhir_adapters.fhir_time import parse_fhir_datetime
from fhir_adapters.references import patient_id_of
from moe_core.feature_catalog import admission_type_category
from moe_core.records import UNKNOWN

__all__ = ["EncounterInfo", "parse_encounter"]


@dataclass(frozen=True, slots=True)
class EncounterInfo:
    """What a record needs from one Encounter."""

    encounter_id: str
    patient_id: str | None
    start: datetime
    end: datetime | None
    class_code: str | None
    is_inpatient: bool
    disposition: str | None
    admission_type: str


def _concept_text(concept: object) -> str | None:
    """Display of a CodeableConcept: text, else first coding display, else code."""
    if not isinstance(concept, Mapping):
        return None
    if isinstance(concept.get("text"), str) and concept["text"]:
        return str(concept["text"])
    for coding in concept.get("coding") or ():
        if isinstance(coding, Mapping):
            for key in ("display", "code"):
                if isinstance(coding.get(key), str) and coding[key]:
                    return str(coding[key])
    return None


def _class_code(encounter: Mapping[str, Any]) -> str | None:
    cls = encounter.get("class")
    if isinstance(cls, list):  # R5 style: list of CodeableConcepts
        cls = (cls[0].get("coding") or [None])[0] if cls and isinstance(cls[0], Mapping) else None
    if isinstance(cls, Mapping) and isinstance(cls.get("code"), str):
        return str(cls["code"])
    return None


def _admission_type(encounter: Mapping[str, Any]) -> str:
    priority = encounter.get("priority")
    if isinstance(priority, Mapping):
        for coding in priority.get("coding") or ():
            if isinstance(coding, Mapping):
                cat = admission_type_category(coding.get("code"))
                if cat != UNKNOWN:
                    return cat
        return admission_type_category(_concept_text(priority))
    return UNKNOWN


def parse_encounter(encounter: Mapping[str, Any]) -> EncounterInfo:
    """Map one Encounter; raises ``MalformedResourceError`` without an id or period.start."""
    enc_id = encounter.get("id")
    if not isinstance(enc_id, str) or not enc_id:
        raise MalformedResourceError("missing id")
    period = encounter.get("period")
    period = period if isinstance(period, Mapping) else {}
    start = parse_fhir_datetime(period.get("start"))
    if start is None:
        raise MalformedResourceError("no admission time", "Encounter.period.start missing")
    end = parse_fhir_datetime(period.get("end"))
    if end is not None and end < start:
        raise MalformedResourceError("period ends before it starts")
    code = _class_code(encounter)
    hosp = encounter.get("hospitalization")
    disposition = (
        _concept_text(hosp.get("dischargeDisposition")) if isinstance(hosp, Mapping) else None
    )
    return EncounterInfo(
        encounter_id=enc_id,
        patient_id=patient_id_of(encounter),
        start=start,
        end=end,
        class_code=code,
        is_inpatient=code in INPATIENT_CLASS_CODES,
        disposition=disposition,
        admission_type=_admission_type(encounter),
    )
