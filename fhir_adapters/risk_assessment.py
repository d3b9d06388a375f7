"""Predictions -> FHIR R4 ``RiskAssessment`` dicts, and a transaction Bundle for write-back.

Plain dicts (orjson-ready). The model and the modalities behind each assessment are
recorded: ``method`` names the model and its version, ``basis`` lists the modalities used
(and, in ``note``, those that were missing and the gate weights), so a reader can tell an
EHR-only risk from a fully multimodal one. Ids are deterministic (patient, encounter,
model version, time), so re-scoring the same admission replaces its assessment (PUT)
instead of piling up copies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from moe_core.modalities import Modality, Task

__all__ = [
    "MODALITY_SYSTEM",
    "MODEL_SYSTEM",
    "OUTCOME_SYSTEM",
    "risk_assessment",
    "risk_assessment_id",
    "transaction_bundle",
]

OUTCOME_SYSTEM = "urn:moe-health:outcome"
MODEL_SYSTEM = "urn:moe-health:model"
MODALITY_SYSTEM = "urn:moe-health:modality"
_SNOMED = "http://snomed.info/sct"
# SNOMED CT concepts for the outcomes where one exists (long stay has none).
_OUTCOME_SNOMED = {Task.MORTALITY: ("419099009", "Dead"),
                   Task.READMISSION: ("417005", "Hospital re-admission")}  # fmt: skip


def _iso(t: datetime) -> str:
    if t.tzinfo is None:
        raise ValueError(f"occurrence time must be timezone-aware, got {t!r}")
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def risk_assessment_id(
    patient_id: str, encounter_id: str, model_version: str, when: datetime
) -> str:
    """A stable id (48 hex chars; FHIR allows 64) for one scoring of one admission."""
    key = "|".join((patient_id, encounter_id, model_version, _iso(when)))
    return hashlib.sha256(key.encode()).hexdigest()[:48]


def _outcome(task: Task) -> dict[str, Any]:
    codings = [{"system": OUTCOME_SYSTEM, "code": task.key, "display": task.title}]
    if task in _OUTCOME_SNOMED:
        code, display = _OUTCOME_SNOMED[task]
        codings.append({"system": _SNOMED, "code": code, "display": display})
    return {"coding": codings, "text": task.title}


def risk_assessment(
    *,
    patient_id: str,
    encounter_id: str,
    occurrence: datetime,
    risks: Mapping[Task, float],
    model_name: str,
    model_version: str,
    modalities_used: Sequence[Modality],
    modalities_missing: Sequence[Modality] = (),
    gate_weights: Mapping[str, float] | None = None,
    status: str = "final",
) -> dict[str, Any]:
    """One RiskAssessment with one ``prediction`` per task in ``risks`` (probabilities 0..1)."""
    if not risks:
        raise ValueError("risks is empty: a RiskAssessment needs at least one prediction")
    for task, p in risks.items():
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"probability for {task.key} must be in [0, 1], got {p}")
    notes = []
    if modalities_missing:
        notes.append("Missing modalities: " + ", ".join(m.name.lower() for m in modalities_missing))
    if gate_weights:
        weights = ", ".join(f"{k}={v:.3f}" for k, v in sorted(gate_weights.items()))
        notes.append(f"Gate weights: {weights}")
    used = ", ".join(m.name.lower() for m in modalities_used) or "none"
    resource: dict[str, Any] = {
        "resourceType": "RiskAssessment",
        "id": risk_assessment_id(patient_id, encounter_id, model_version, occurrence),
        "status": status,
        "subject": {"reference": f"Patient/{patient_id}"},
        "encounter": {"reference": f"Encounter/{encounter_id}"},
        "occurrenceDateTime": _iso(occurrence),
        "method": {
            "coding": [{"system": MODEL_SYSTEM, "code": model_name, "version": model_version}],
            "text": f"{model_name} {model_version} (modalities used: {used})",
        },
        "basis": [{"display": f"{MODALITY_SYSTEM}#{m.name.lower()}"} for m in modalities_used],
        "prediction": [
            {"outcome": _outcome(task), "probabilityDecimal": round(float(p), 6)}
            for task, p in sorted(risks.items())
        ],
    }
    if not resource["basis"]:
        del resource["basis"]
    if notes:
        resource["note"] = [{"text": n} for n in notes]
    return resource


def transaction_bundle(resources: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A transaction Bundle that PUTs each resource at ``Type/id`` (idempotent write-back)."""
    entries = []
    for res in resources:
        rtype, rid = res.get("resourceType"), res.get("id")
        if not rtype or not rid:
            raise ValueError("every resource needs resourceType and id for a PUT entry")
        entries.append(
            {
                "fullUrl": f"{rtype}/{rid}",
                "resource": dict(res),
                "request": {"method": "PUT", "url": f"{rtype}/{rid}"},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}
