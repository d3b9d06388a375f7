"""FHIR R4 resources of the synthetic cohort, as plain dicts (serialised with orjson).

Every resource carries the security label HTEST ("test health data") and the tag
``synthetic`` in ``meta``, so no system can mistake it for a real patient.
DICOM files are referenced through one ``Endpoint`` whose ``address`` is the folder
(relative to the export) holding ``studies/<StudyUID>/series/<SeriesUID>/instances/
<SOPUID>.dcm`` — the WADO-RS path layout, served from files.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from training.synth.images import CR_SOP_CLASS, DX_SOP_CLASS, SynthImage
from training.synth.notes import NOTE_KINDS, SynthNote
from training.synth.vitals import BP_DIASTOLIC, BP_PANEL, BP_SYSTOLIC, Measurement, variable

__all__ = [
    "DICOM_ENDPOINT_ID",
    "DICOM_FOLDER",
    "SYNTHETIC_TAG",
    "SYNTHETIC_TAG_SYSTEM",
    "Resource",
    "dicom_endpoint",
    "document_reference",
    "encounter",
    "fhir_time",
    "imaging_study",
    "instance_path",
    "observation",
    "patient",
]

Resource = dict[str, Any]

SYNTHETIC_TAG_SYSTEM = "urn:moe-health:synthetic"
SYNTHETIC_TAG = "synthetic"
DICOM_ENDPOINT_ID = "synthetic-dicom-files"
DICOM_FOLDER = "dicom"

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
_META = {
    "security": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
            "code": "HTEST",
            "display": "test health data",
        }
    ],
    "tag": [{"system": SYNTHETIC_TAG_SYSTEM, "code": SYNTHETIC_TAG, "display": "Synthetic data"}],
}
_OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
_US_CORE_RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
_US_CORE_ETHNICITY = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"
_OMB = "urn:oid:2.16.840.1.113883.6.238"
_PRIORITY = "http://terminology.hl7.org/CodeSystem/v3-ActPriority"
_DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
_PRIORITY_DISPLAY = {"EM": "emergency", "UR": "urgent", "EL": "elective"}
_DISPOSITION_DISPLAY = {
    "home": "Home",
    "snf": "Skilled nursing facility",
    "rehab": "Rehabilitation",
    "exp": "Expired",
}


def fhir_time(t: datetime) -> str:
    """An instant with seconds and an explicit UTC offset."""
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta() -> dict[str, Any]:
    return {"security": list(_META["security"]), "tag": list(_META["tag"])}


def _omb_extension(url: str, code_display: tuple[str, str]) -> dict[str, Any]:
    code, display = code_display
    return {
        "url": url,
        "extension": [
            {
                "url": "ombCategory",
                "valueCoding": {"system": _OMB, "code": code, "display": display},
            },
            {"url": "text", "valueString": display},
        ],
    }


def patient(
    pid: str,
    index: int,
    sex: str,
    birth_date: str,
    race: tuple[str, str],
    ethnicity: tuple[str, str],
    deceased: datetime | None,
) -> Resource:
    """A Patient named ``Synthetic-<index>`` with US Core race/ethnicity extensions."""
    res: Resource = {
        "resourceType": "Patient",
        "id": pid,
        "meta": _meta(),
        "identifier": [{"system": SYNTHETIC_TAG_SYSTEM, "value": f"SYN{index:08d}"}],
        "name": [{"use": "official", "family": f"Synthetic-{index:08d}", "given": ["Test"]}],
        "gender": sex,
        "birthDate": birth_date,
        "extension": [
            _omb_extension(_US_CORE_RACE, race),
            _omb_extension(_US_CORE_ETHNICITY, ethnicity),
        ],
    }
    if deceased is not None:
        res["deceasedDateTime"] = fhir_time(deceased)
    else:
        res["deceasedBoolean"] = False
    return res


def encounter(
    eid: str, pid: str, start: datetime, end: datetime, priority: str, disposition: str
) -> Resource:
    """A finished inpatient Encounter with its discharge disposition."""
    return {
        "resourceType": "Encounter",
        "id": eid,
        "meta": _meta(),
        "status": "finished",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "IMP",
            "display": "inpatient encounter",
        },
        "priority": {
            "coding": [
                {"system": _PRIORITY, "code": priority, "display": _PRIORITY_DISPLAY[priority]}
            ]
        },
        "subject": {"reference": f"Patient/{pid}"},
        "period": {"start": fhir_time(start), "end": fhir_time(end)},
        "hospitalization": {
            "dischargeDisposition": {
                "coding": [
                    {
                        "system": _DISPOSITION,
                        "code": disposition,
                        "display": _DISPOSITION_DISPLAY[disposition],
                    }
                ]
            }
        },
    }


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _concept(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": LOINC, "code": code, "display": display}]}


def observation(oid: str, pid: str, eid: str, when: datetime, m: Measurement) -> Resource:
    """One Observation; blood pressure becomes a panel with two components."""
    var = variable(m.key)
    res: Resource = {
        "resourceType": "Observation",
        "id": oid,
        "meta": {"tag": list(_META["tag"])},
        "status": "final",
        "category": [{"coding": [{"system": _OBS_CATEGORY, "code": var.category}]}],
        "subject": {"reference": f"Patient/{pid}"},
        "encounter": {"reference": f"Encounter/{eid}"},
        "effectiveDateTime": fhir_time(when),
    }
    if m.second is not None:
        res["code"] = _concept(*BP_PANEL)
        res["component"] = [
            {"code": _concept(*BP_SYSTOLIC), "valueQuantity": _quantity(m.value, m.unit)},
            {"code": _concept(*BP_DIASTOLIC), "valueQuantity": _quantity(m.second, m.unit)},
        ]
    else:
        res["code"] = _concept(var.loinc, var.display)
        res["valueQuantity"] = _quantity(m.value, m.unit)
    return res


def document_reference(did: str, pid: str, eid: str, when: datetime, note: SynthNote) -> Resource:
    """A DocumentReference holding the note as base64 ``text/plain``."""
    code, display = NOTE_KINDS[note.kind]
    return {
        "resourceType": "DocumentReference",
        "id": did,
        "meta": _meta(),
        "status": "current",
        "docStatus": "final",
        "type": _concept(code, display),
        "category": [
            {
                "coding": [
                    {
                        "system": "http://hl7.org/fhir/us/core/CodeSystem/"
                        "us-core-documentreference-category",
                        "code": "clinical-note",
                        "display": "Clinical Note",
                    }
                ]
            }
        ],
        "subject": {"reference": f"Patient/{pid}"},
        "date": fhir_time(when),
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain; charset=utf-8",
                    "data": base64.b64encode(note.text.encode("utf-8")).decode("ascii"),
                    "creation": fhir_time(when),
                }
            }
        ],
        "context": {
            "encounter": [{"reference": f"Encounter/{eid}"}],
            "period": {"start": fhir_time(when)},
        },
    }


def instance_path(study_uid: str, image: SynthImage) -> str:
    """Path of an instance's file relative to the export folder (WADO-RS layout)."""
    return (
        f"{DICOM_FOLDER}/studies/{study_uid}/series/{image.series_uid}"
        f"/instances/{image.sop_uid}.dcm"
    )


def imaging_study(
    sid: str, pid: str, eid: str, when: datetime, study_uid: str, images: list[SynthImage]
) -> Resource:
    """An ImagingStudy with one series per film, linked to the DICOM file endpoint."""
    series = []
    for n, img in enumerate(images, start=1):
        sop_class = DX_SOP_CLASS if img.modality == "DX" else CR_SOP_CLASS
        series.append(
            {
                "uid": img.series_uid,
                "number": n,
                "modality": {"system": DCM, "code": img.modality},
                "description": f"CHEST {img.view}",
                "numberOfInstances": 1,
                "bodySite": {
                    "system": "http://snomed.info/sct",
                    "code": "51185008",
                    "display": "Thoracic structure",
                },
                "started": fhir_time(when),
                "instance": [
                    {
                        "uid": img.sop_uid,
                        "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{sop_class}"},
                        "number": 1,
                        "title": f"CHEST {img.view}",
                    }
                ],
            }
        )
    return {
        "resourceType": "ImagingStudy",
        "id": sid,
        "meta": _meta(),
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"}],
        "status": "available",
        "modality": [{"system": DCM, "code": m} for m in sorted({i.modality for i in images})],
        "subject": {"reference": f"Patient/{pid}"},
        "encounter": {"reference": f"Encounter/{eid}"},
        "started": fhir_time(when),
        "endpoint": [{"reference": f"Endpoint/{DICOM_ENDPOINT_ID}"}],
        "numberOfSeries": len(series),
        "numberOfInstances": len(series),
        "description": "CHEST RADIOGRAPH (SYNTHETIC)",
        "series": series,
    }


def dicom_endpoint() -> Resource:
    """The Endpoint through which the DICOM files are found (a folder in the export)."""
    return {
        "resourceType": "Endpoint",
        "id": DICOM_ENDPOINT_ID,
        "meta": _meta(),
        "status": "active",
        "connectionType": {
            "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
            "code": "dicom-wado-rs",
        },
        "name": "Synthetic DICOM files (WADO-RS path layout, relative to the export folder)",
        "payloadType": [{"text": "DICOM"}],
        "payloadMimeType": ["application/dicom"],
        "address": DICOM_FOLDER,
    }
