"""Scored rows -> FHIR R4 ``RiskAssessment`` dicts, table rows, error lines and counts.

One RiskAssessment per scored admission and task, built by
``fhir_adapters.risk_assessment``: ``subject``, ``encounter``, ``occurrenceDateTime`` (the
prediction time), ``prediction[0].probabilityDecimal``, ``method`` naming the model and
version, ``basis`` naming the modalities used. Its id is derived from (patient,
encounter, model version, prediction time, task), so writing the same result back twice
updates one resource (PUT) instead of creating a duplicate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_adapters import risk_assessment as fhir_ra
from moe_core.modalities import MODALITIES, TASKS, Task
from training.score import keys
from training.score.pipeline import Failure, ModelInfo, ScoredRow, table_rows
from training.score.run_store import Chunk

__all__ = ["OutputRenderer", "risk_assessment", "task_risk_assessment_id"]

_MODALITY_BY_NAME = {m.name.lower(): m for m in MODALITIES}


def task_risk_assessment_id(scored: ScoredRow, task: Task, info: ModelInfo) -> str:
    """A stable FHIR id for one scoring of one admission and one task (48 hex chars)."""
    base = fhir_ra.risk_assessment_id(
        scored.patient_id, scored.encounter_id, info.version, _when(scored)
    )
    return hashlib.sha256(f"{base}|{task.key}".encode()).hexdigest()[:48]


def risk_assessment(scored: ScoredRow, task: Task, info: ModelInfo) -> dict[str, Any]:
    """The RiskAssessment for one scored admission and one task (plain dict, R4)."""
    resource = fhir_ra.risk_assessment(
        patient_id=scored.patient_id,
        encounter_id=scored.encounter_id,
        occurrence=_when(scored),
        risks={task: scored.risks[task.key]},
        model_name=info.name,
        model_version=info.version,
        modalities_used=[_MODALITY_BY_NAME[n] for n in scored.modalities_used],
        modalities_missing=[_MODALITY_BY_NAME[n] for n in scored.modalities_missing],
        gate_weights=scored.gate_weights or None,
    )
    resource["id"] = task_risk_assessment_id(scored, task, info)
    return resource


def _when(scored: ScoredRow) -> datetime:
    return datetime.fromisoformat(scored.prediction_time)


@dataclass(frozen=True, slots=True)
class OutputRenderer:
    """Fills a chunk from scored rows and failures (the last, pure stage)."""

    info: ModelInfo

    def fill(self, chunk: Chunk, scored: Sequence[ScoredRow], failures: Sequence[Failure]) -> None:
        """Add RiskAssessments, table rows, error lines and counts to ``chunk``.

        A row whose RiskAssessments cannot be built (a NaN or out-of-range probability)
        is reported as a scoring failure and left out of every output; the rest go on.
        """
        scored_patients: set[str] = set()
        problems = list(failures)
        for row in scored:
            try:
                ras = [] if row.abstain_reason else self.risk_assessments(row)
            except Exception as exc:  # one bad row must not stop the run
                problems.append(
                    Failure(
                        keys.REASON_SCORING_FAILED,
                        row.patient_id,
                        f"Encounter/{row.encounter_id}",
                        f"{type(exc).__name__}: {exc}"[:500],
                    )
                )
                continue
            chunk.rows.extend(table_rows(row, self.info))
            if row.abstain_reason:
                chunk.counts.abstained += 1
                chunk.errors.append(
                    Failure(
                        keys.REASON_ABSTAINED,
                        row.patient_id,
                        f"Encounter/{row.encounter_id}",
                        row.abstain_reason,
                    ).to_dict()
                )
                continue
            scored_patients.add(row.patient_id)
            chunk.counts.encounters_scored += 1
            chunk.risk_assessments.extend(ras)
        chunk.counts.risk_assessments = len(chunk.risk_assessments)
        chunk.errors.extend(f.to_dict() for f in problems)
        in_chunk = set(chunk.patient_ids)
        chunk.counts.patients = len(in_chunk)
        chunk.counts.patients_scored = len(scored_patients & in_chunk)
        chunk.counts.patients_failed = len(in_chunk - scored_patients)
        chunk.counts.bad_resources = sum(1 for f in problems if f.reason in keys.READ_REASONS)
        chunk.counts.failures = len(chunk.errors)

    def risk_assessments(self, row: ScoredRow) -> list[dict[str, Any]]:
        """One RiskAssessment per task the row has a risk for (raises on a bad risk)."""
        return [risk_assessment(row, task, self.info) for task in TASKS if task.key in row.risks]
