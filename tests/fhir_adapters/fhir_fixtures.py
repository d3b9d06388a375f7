"""Small FHIR R4 resource builders for the adapter tests."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["ADMIT", "document", "encounter", "iso", "observation", "patient"]

ADMIT = datetime(2150, 3, 1, 8, 0, tzinfo=UTC)
PID = "p1"


def iso(t: datetime) -> str:
    return t.isoformat()


def patient(pid: str = PID, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "gender": "female",
        "birthDate": "2080-03-01",
        "extension": [
            {
                "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
                "extension": [
                    {"url": "ombCategory", "valueCoding": {"code": "2054-5"}},
                    {"url": "text", "valueString": "Black or African American"},
                ],
            },
            {
                "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity",
                "extension": [{"url": "ombCategory", "valueCoding": {"code": "2186-5"}}],
            },
        ],
        **extra,
    }


def encounter(
    eid: str = "e1", pid: str = PID, start: datetime = ADMIT, days: float = 10, cls: str = "IMP"
) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished",
        "class": {"code": cls},
        "subject": {"reference": f"Patient/{pid}"},
        "period": {"start": iso(start), "end": iso(start + timedelta(days=days))},
        "priority": {"coding": [{"code": "EM"}]},
        "hospitalization": {"dischargeDisposition": {"text": "Home"}},
    }


def observation(
    oid: str,
    loinc: str,
    hours: float,
    value: float | None = None,
    unit: str | None = None,
    pid: str = PID,
    **extra: Any,
) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": iso(ADMIT + timedelta(hours=hours)),
    }
    if value is not None:
        q: dict[str, Any] = {"value": value}
        if unit is not None:
            q["unit"] = unit
            q["code"] = unit
            q["system"] = "http://unitsofmeasure.org"
        obs["valueQuantity"] = q
    obs.update(extra)
    return obs


def document(
    did: str,
    hours: float,
    text: str | None = None,
    *,
    content_type: str = "text/plain",
    encoding: str = "utf-8",
    url: str | None = None,
    loinc: str = "11506-3",
    pid: str = PID,
) -> dict[str, Any]:
    att: dict[str, Any] = {"contentType": content_type}
    if text is not None:
        att["data"] = base64.b64encode(text.encode(encoding)).decode("ascii")
    if url is not None:
        att["url"] = url
    return {
        "resourceType": "DocumentReference",
        "id": did,
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "subject": {"reference": f"Patient/{pid}"},
        "date": iso(ADMIT + timedelta(hours=hours)),
        "content": [{"attachment": att}],
    }
