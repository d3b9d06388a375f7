"""Names used by batch scoring: table columns, failure reasons and output file names.

Every string the scorer writes to disk (column, reason, file) is spelled here once.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "COL_ABSTAIN_REASON",
    "COL_ENCOUNTER_ID",
    "COL_MODALITIES_MISSING",
    "COL_MODALITIES_USED",
    "COL_MODEL_VERSION",
    "COL_PATIENT_ID",
    "COL_PREDICTION_TIME",
    "COL_RISK",
    "COL_SPEC_VERSION",
    "COL_TASK",
    "ERRORS_FILE",
    "LEDGER_FILE",
    "PARTS_DIR",
    "READ_REASONS",
    "REASON_ABSTAINED",
    "REASON_BAD_RESOURCE",
    "REASON_NO_ENCOUNTER",
    "REASON_NO_PATIENT",
    "REASON_RECORD_FAILED",
    "REASON_SCORING_FAILED",
    "REASON_UNKNOWN_TYPE",
    "REASON_UNREADABLE_FILE",
    "REASON_WRITE_BACK_FAILED",
    "RISK_NDJSON_FILE",
    "SUMMARY_FILE",
    "TABLE_COLUMNS",
    "TABLE_CSV_FILE",
    "TABLE_PARQUET_FILE",
]

# Table columns, one row per (encounter, task).
COL_PATIENT_ID: Final = "patient_id"
COL_ENCOUNTER_ID: Final = "encounter_id"
COL_TASK: Final = "task"
COL_RISK: Final = "risk"
COL_PREDICTION_TIME: Final = "prediction_time"
COL_MODEL_VERSION: Final = "model_version"
COL_SPEC_VERSION: Final = "spec_version"
COL_MODALITIES_USED: Final = "modalities_used"
COL_MODALITIES_MISSING: Final = "modalities_missing"
COL_ABSTAIN_REASON: Final = "abstain_reason"

TABLE_COLUMNS: Final = (
    COL_PATIENT_ID,
    COL_ENCOUNTER_ID,
    COL_TASK,
    COL_RISK,
    COL_PREDICTION_TIME,
    COL_MODEL_VERSION,
    COL_SPEC_VERSION,
    COL_MODALITIES_USED,
    COL_MODALITIES_MISSING,
    COL_ABSTAIN_REASON,
)

# Why a line, a resource or a patient was not scored (the error file's "reason").
REASON_BAD_RESOURCE: Final = "unparsable NDJSON line"
REASON_UNKNOWN_TYPE: Final = "unsupported resource type"
REASON_NO_PATIENT: Final = "resource without a patient reference"
REASON_NO_ENCOUNTER: Final = "patient has no scorable encounter"
REASON_RECORD_FAILED: Final = "could not build a patient record"
REASON_ABSTAINED: Final = "model abstained: no modality in the observation window"
REASON_SCORING_FAILED: Final = "model could not score the record"
REASON_WRITE_BACK_FAILED: Final = "write-back to the FHIR server failed"
REASON_UNREADABLE_FILE: Final = "export file is corrupt or cut short; lines after the fault lost"

# Reasons counted as ``bad_resources``: lines and resources of the export that were unusable.
READ_REASONS: Final = frozenset({REASON_BAD_RESOURCE, REASON_UNKNOWN_TYPE, REASON_NO_PATIENT})

# Output layout under --out.
RISK_NDJSON_FILE: Final = "RiskAssessment.ndjson"
TABLE_PARQUET_FILE: Final = "scores.parquet"
TABLE_CSV_FILE: Final = "scores.csv"
ERRORS_FILE: Final = "errors.jsonl"
SUMMARY_FILE: Final = "summary.json"
LEDGER_FILE: Final = "ledger.jsonl"
PARTS_DIR: Final = "parts"
