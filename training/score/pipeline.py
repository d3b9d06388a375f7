"""Batch scoring as engine-agnostic stages: pure functions over plain data.

::

    PatientGroup ─ group_records ─→ PatientRecord ─ featurise_records ─→ FeatureRow
        (one patient's resources)     (per admission)                   (numpy + text)
    FeatureRow ─ BatchScorer.score ─→ ScoredRow ─ render_outputs ─→ RiskAssessment dicts
                 (encoders + model)     (risks)                      + table rows

The local engine (``training.score.local``) runs the stages in one process; the Ray
engine (``training.score.ray_engine``) runs ``group_records`` + ``featurise_records``
in CPU tasks and ``BatchScorer`` in an actor pool. Feature rows and scored rows are
plain dicts of NumPy arrays and strings, so they cross process boundaries unchanged and
both engines give the same results record for record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from moe_core.feature_spec import FeatureSpec, NormStats
from moe_core.features import (
    ehr_series,
    image_content_key,
    image_tensor,
    note_text,
    static_row,
    text_content_key,
)
from moe_core.modalities import MODALITIES, TASKS, Modality, pattern_name
from moe_core.records import PatientRecord
from training.score import keys

__all__ = [
    "RISK_DECIMALS",
    "BatchScorer",
    "Failure",
    "FeatureRow",
    "ModelInfo",
    "PatientGroup",
    "RawPatientGroup",
    "RecordBuilder",
    "ScoredRow",
    "featurise_records",
    "group_records",
    "table_rows",
]

# Risks are rounded once, here, so every engine and every output agrees to the digit.
RISK_DECIMALS = 6


@dataclass(slots=True)
class PatientGroup:
    """Every resource of one patient (Patient, Encounter, Observation, ...), as dicts.

    A source that yields ready ``PatientRecord`` s (MIMIC-IV) puts them here instead.
    """

    patient_id: str  # the ledger key: a patient id (or "<subject>/<admission>" for MIMIC)
    resources: list[Any]


@dataclass(slots=True)
class RawPatientGroup:
    """One patient's resources as their raw NDJSON lines, not yet parsed.

    What a spilling source hands to featurising worker processes: bytes pickle at memory
    speed where parsed dicts cost more than parsing them, so the worker parses
    (``training.score.sources.parse_group``) and the reading process does not.
    """

    patient_id: str
    lines: list[bytes]


@dataclass(frozen=True, slots=True)
class Failure:
    """A line, resource or patient that was not scored, and why (an error-file line)."""

    reason: str  # one of the keys.REASON_* strings
    patient_id: str | None = None
    source: str | None = None  # e.g. "Observation.000.ndjson:17"; dedupes on resume
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "patient_id": self.patient_id,
            "source": self.source,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the outputs say about the model that produced them."""

    name: str
    version: str
    spec_version: str


# (resources of one patient) -> admissions to score; the FHIR or MIMIC record builder.
RecordBuilder = Callable[[PatientGroup], list[PatientRecord]]


@dataclass(slots=True)
class FeatureRow:
    """One admission ready for the model: model inputs as NumPy, notes as text.

    ``image`` is the normalised (3, 224, 224) tensor, or ``None`` when there is no
    frontal image or when its embedding is already cached (``image_key`` set).
    """

    patient_id: str
    encounter_id: str
    prediction_time: str  # ISO 8601, UTC
    ehr_values: npt.NDArray[np.float32]  # (T, F)
    ehr_mask: npt.NDArray[np.float32]  # (T, F)
    static_num: npt.NDArray[np.float32]  # (S,)
    static_num_mask: npt.NDArray[np.float32]  # (S,)
    static_cat: npt.NDArray[np.int64]  # (C,)
    present: npt.NDArray[np.bool_]  # (3,), Modality order
    text: str  # assembled note text, "" when absent
    image_key: str  # content key of the frontal image, "" when absent
    image: npt.NDArray[np.float32] | None  # (3, 224, 224) or None


@dataclass(slots=True)
class ScoredRow:
    """The model's answer for one admission."""

    patient_id: str
    encounter_id: str
    prediction_time: str
    risks: dict[str, float]  # Task key -> probability, rounded to RISK_DECIMALS
    modalities_used: tuple[str, ...]  # Modality names, lower case
    modalities_missing: tuple[str, ...]
    abstain_reason: str | None = None
    gate_weights: dict[str, float] | None = None  # expert name -> gate probability


class BatchScorer(Protocol):
    """Encoders + model: feature rows in, scored rows out (one batched call)."""

    info: ModelInfo

    def image_cached(self, key: str) -> bool:
        """Whether the image embedding for ``key`` is already in the cache."""
        ...

    def score(self, rows: Sequence[FeatureRow]) -> list[ScoredRow]:
        """Scores in the order of ``rows``."""
        ...


def group_records(
    group: PatientGroup, build: RecordBuilder
) -> tuple[list[PatientRecord], list[Failure]]:
    """The admissions of one patient, or a failure saying why there are none."""
    try:
        records = build(group)
    except Exception as exc:  # a bad patient is reported, the run goes on
        return [], [Failure(keys.REASON_RECORD_FAILED, group.patient_id, None, _describe(exc))]
    if not records:
        return [], [Failure(keys.REASON_NO_ENCOUNTER, group.patient_id)]
    return records, []


def featurise_records(
    records: Iterable[PatientRecord],
    spec: FeatureSpec,
    stats: NormStats,
    image_cached: Callable[[str], bool] | None = None,
) -> tuple[list[FeatureRow], list[Failure]]:
    """Model inputs for each record; a record that cannot be featurised is a failure.

    Images whose embedding ``image_cached`` already holds are not decoded at all.
    """
    rows: list[FeatureRow] = []
    failures: list[Failure] = []
    for rec in records:
        try:
            rows.append(_featurise_one(rec, spec, stats, image_cached))
        except Exception as exc:
            failures.append(
                Failure(
                    keys.REASON_RECORD_FAILED,
                    rec.patient_id,
                    f"Encounter/{rec.encounter_id}",
                    _describe(exc),
                )
            )
    return rows, failures


def _featurise_one(
    rec: PatientRecord,
    spec: FeatureSpec,
    stats: NormStats,
    image_cached: Callable[[str], bool] | None,
) -> FeatureRow:
    values, mask = ehr_series(rec, spec, stats)  # (T, F) each
    num, num_mask, cat = static_row(rec, spec, stats)
    present = np.array(rec.present, dtype=np.bool_)  # (3,)
    text = note_text(rec) if present[Modality.TEXT] else ""
    image_key = ""
    image: npt.NDArray[np.float32] | None = None
    ref = rec.frontal_image() if present[Modality.IMAGE] else None
    if ref is not None:
        try:
            pixels = None if ref.content_key else ref.load()
            image_key = image_content_key(ref, pixels)
            if image_cached is None or not image_cached(image_key):
                image = image_tensor(ref.load() if pixels is None else pixels).numpy()
        except (ValueError, OSError):
            # An unreadable image makes the modality absent, as in moe_core.features.
            present[Modality.IMAGE] = False
            image_key, image = "", None
    if not present[Modality.TEXT]:
        text = ""
    return FeatureRow(
        patient_id=rec.patient_id,
        encounter_id=rec.encounter_id,
        prediction_time=_iso(rec.prediction_time),
        ehr_values=values,
        ehr_mask=mask,
        static_num=np.asarray(num, dtype=np.float32),
        static_num_mask=np.asarray(num_mask, dtype=np.float32),
        static_cat=np.asarray(cat, dtype=np.int64),
        present=present,
        text=text,
        image_key=image_key,
        image=image,
    )


def text_key(text: str) -> str:
    """Cache key of an assembled note text (the model package's key)."""
    return text_content_key(text)


def modality_names(present: Sequence[bool]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(used, missing) modality names for a ``present`` row."""
    used = tuple(m.name.lower() for m, on in zip(MODALITIES, present, strict=True) if on)
    missing = tuple(m.name.lower() for m, on in zip(MODALITIES, present, strict=True) if not on)
    return used, missing


def pattern_of(used: Sequence[str]) -> str:
    """``("ehr", "image")`` -> ``"E+I"``."""
    names = {n.lower() for n in used}
    return pattern_name([m.name.lower() in names for m in MODALITIES])


def table_rows(scored: ScoredRow, info: ModelInfo) -> list[dict[str, Any]]:
    """One table row per task for a scored admission (abstentions get an empty risk)."""
    rows = []
    for task in TASKS:
        if task.key not in scored.risks:
            continue  # a model trained for a subset of tasks
        risk = None if scored.abstain_reason else scored.risks[task.key]
        rows.append(
            {
                keys.COL_PATIENT_ID: scored.patient_id,
                keys.COL_ENCOUNTER_ID: scored.encounter_id,
                keys.COL_TASK: task.key,
                keys.COL_RISK: risk,
                keys.COL_PREDICTION_TIME: scored.prediction_time,
                keys.COL_MODEL_VERSION: info.version,
                keys.COL_SPEC_VERSION: info.spec_version,
                keys.COL_MODALITIES_USED: "+".join(scored.modalities_used),
                keys.COL_MODALITIES_MISSING: "+".join(scored.modalities_missing),
                keys.COL_ABSTAIN_REASON: scored.abstain_reason,
            }
        )
    return rows


def round_risk(p: float) -> float:
    """A probability rounded to ``RISK_DECIMALS``."""
    return round(float(p), RISK_DECIMALS)


def _iso(t: datetime) -> str:
    return t.isoformat()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
