"""Scored rows -> FHIR R4 ``RiskAssessment`` dicts, table rows, error lines and counts.

One RiskAssessment per scored admission and task: ``subject``, ``encounter``,
``occurrenceDateTime`` (the prediction time), ``prediction[0].probabilityDecimal``,
``method`` naming the model and version, ``basis`` naming the modalities used. Its id
is derived from (model version, encounter, task), so writing the same result back twice
updates one resource instead of creating a duplicate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from moe_core.modalities import TASKS, Task
from training.score import keys
from training.score.pipeline import Failure, ModelInfo, ScoredRow, pattern_of, table_rows
from training.score.run_store import Chunk

__all__ = [
    "METHOD_SYSTEM",
    "MODALITY_BASIS_SYSTEM",
    "OUTCOME_SYSTEM",
    "OutputRenderer",
    "risk_assessment",
    "risk_assessment_id",
]

METHOD_SYSTEM = "urn:moe-health:model"
OUTCOME_SYSTEM = "urn:moe-health:task"
MODALITY_BASIS_SYSTEM = "urn:moe-health:modality"
_READ_REASONS = frozenset(
    {keys.REASON_BAD_RESOURCE, keys.REASON_UNKNOWN_TYPE, keys.REASON_NO_PATIENT}
)


def risk_assessment_id(model_version: str, encounter_id: str, task: Task) -> str:
    """A stable FHIR id (64 hex chars) for one model version, encounter and task."""
    raw = f"{model_version}|{encounter_id}|{task.key}".encode()
    return hashlib.sha256(raw).hexdigest()


def risk_assessment(scored: ScoredRow, task: Task, info: ModelInfo) -> dict[str, Any]:
    """The RiskAssessment for one scored admission and one task (plain dict, R4)."""
    used = "+".join(scored.modalities_used)
    return {
        "resourceType": "RiskAssessment",
        "id": risk_assessment_id(info.version, scored.encounter_id, task),
        "status": "final",
        "subject": {"reference": f"Patient/{scored.patient_id}"},
        "encounter": {"reference": f"Encounter/{scored.encounter_id}"},
        "occurrenceDateTime": scored.prediction_time,
        "method": {
            "coding": [{"system": METHOD_SYSTEM, "code": info.name, "version": info.version}],
            "text": f"{info.name} {info.version} (feature spec {info.spec_version})",
        },
        "basis": [
            {
                "identifier": {"system": MODALITY_BASIS_SYSTEM, "value": name},
                "display": f"modality used: {name}",
            }
            for name in scored.modalities_used
        ],
        "prediction": [
            {
                "outcome": {
                    "coding": [{"system": OUTCOME_SYSTEM, "code": task.key, "display": task.title}],
                    "text": task.title,
                },
                "probabilityDecimal": scored.risks[task],
            }
        ],
        "note": [{"text": f"modalities used: {pattern_of(scored.modalities_used)} ({used})"}],
    }


@dataclass(frozen=True, slots=True)
class OutputRenderer:
    """Fills a chunk from scored rows and failures (the last, pure stage)."""

    info: ModelInfo

    def fill(self, chunk: Chunk, scored: Sequence[ScoredRow], failures: Sequence[Failure]) -> None:
        """Add RiskAssessments, table rows, error lines and counts to ``chunk``."""
        scored_patients: set[str] = set()
        for row in scored:
            chunk.rows.extend(table_rows(row, self.info))
            if row.abstain_reason:
                continue
            scored_patients.add(row.patient_id)
            chunk.counts.encounters_scored += 1
            for task in TASKS:
                chunk.risk_assessments.append(risk_assessment(row, task, self.info))
        chunk.counts.risk_assessments = len(chunk.risk_assessments)
        chunk.errors.extend(f.to_dict() for f in failures)
        in_chunk = set(chunk.patient_ids)
        chunk.counts.patients = len(in_chunk)
        chunk.counts.patients_scored = len(scored_patients & in_chunk)
        chunk.counts.patients_failed = len(in_chunk - scored_patients)
        chunk.counts.bad_resources = sum(1 for f in failures if f.reason in _READ_REASONS)
        chunk.counts.failures = len(failures)
