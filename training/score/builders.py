"""Record builders: one patient's resources -> admissions, for each source.

They are small frozen dataclasses (picklable), so the Ray engine can ship them to its
CPU workers unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from moe_core.records import DEFAULT_WINDOW_HOURS, PatientRecord
from training.score.pipeline import PatientGroup

__all__ = ["FhirRecordBuilder"]


@dataclass(frozen=True, slots=True)
class FhirRecordBuilder:
    """FHIR resources of one patient -> one record per inpatient admission.

    ``prediction_time`` is "now" for a nightly run over current inpatients (each
    admission is then scored on what was known at that time, at most ``window_hours``
    after admission); ``None`` scores every admission at the end of its window.
    ``image_source`` resolves ImagingStudy resources to pixels
    (``fhir_adapters.imaging``); without one, admissions are scored without images.
    """

    prediction_time: datetime | None = None
    window_hours: int = DEFAULT_WINDOW_HOURS
    image_source: Any | None = None  # fhir_adapters.record.StudyImageSource

    def __call__(self, group: PatientGroup) -> list[PatientRecord]:
        from fhir_adapters.record import build_patient_records

        return build_patient_records(
            group.patient_id,
            group.resources,
            prediction_time=self.prediction_time,
            window_hours=self.window_hours,
            image_source=self.image_source,
        )
