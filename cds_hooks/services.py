"""The CDS services this app offers, their prefetch templates, and the keys they use.

Prefetch tokens follow CDS Hooks 2.0: only hook context fields (``{{context.patientId}}``,
``{{context.encounterId}}``) and the relative-date FHIRPath ``{{today() - N days}}``.
The clinical window (admission + 48 h) cannot be expressed in a token, so searches are
bounded with ``today() - lookback_days`` and the exact window is applied afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "PREFETCH_KEYS",
    "SERVICES",
    "PrefetchKey",
    "ServiceDefinition",
    "ServiceId",
    "service_by_id",
]


class ServiceId(StrEnum):
    PATIENT_VIEW = "patient-view"
    ENCOUNTER_DISCHARGE = "encounter-discharge"


class PrefetchKey(StrEnum):
    PATIENT = "patient"
    ENCOUNTER = "encounter"
    OBSERVATIONS = "observations"
    DOCUMENTS = "documents"
    IMAGING = "imaging"


PREFETCH_KEYS: tuple[PrefetchKey, ...] = tuple(PrefetchKey)
# Without these the model has no admission to score: 412 when they cannot be had.
REQUIRED_KEYS = frozenset({PrefetchKey.PATIENT, PrefetchKey.ENCOUNTER, PrefetchKey.OBSERVATIONS})
# Resource type each key yields, to sort fetched resources and spot wrong payloads.
KEY_RESOURCE_TYPE = {
    PrefetchKey.PATIENT: "Patient",
    PrefetchKey.ENCOUNTER: "Encounter",
    PrefetchKey.OBSERVATIONS: "Observation",
    PrefetchKey.DOCUMENTS: "DocumentReference",
    PrefetchKey.IMAGING: "ImagingStudy",
}


@dataclass(frozen=True, slots=True)
class ServiceDefinition:
    """One entry of the discovery document."""

    id: ServiceId
    hook: str
    title: str
    description: str
    encounter_in_context: bool  # the hook's context always names the encounter
    usage_requirements: str

    def prefetch(self, lookback_days: int) -> dict[str, str]:
        """Prefetch templates (key -> relative FHIR query with tokens)."""
        since = f"{{{{today() - {lookback_days} days}}}}"
        patient = "{{context.patientId}}"
        encounter = (
            "Encounter/{{context.encounterId}}"
            if self.encounter_in_context
            else f"Encounter?patient={patient}&_sort=-date&_count=20"
        )
        return {
            PrefetchKey.PATIENT: f"Patient/{patient}",
            PrefetchKey.ENCOUNTER: encounter,
            PrefetchKey.OBSERVATIONS: f"Observation?patient={patient}&date=ge{since}&_count=1000",
            PrefetchKey.DOCUMENTS: f"DocumentReference?patient={patient}&date=ge{since}",
            PrefetchKey.IMAGING: f"ImagingStudy?patient={patient}&started=ge{since}",
        }


_USAGE = (
    "Needs the patient's current hospital encounter and its vital signs/labs; notes and "
    "chest X-rays are used when present. Data come from prefetch or, when missing, from "
    "fhirServer with fhirAuthorization (read access to Patient, Encounter, Observation, "
    "DocumentReference, ImagingStudy)."
)

SERVICES: tuple[ServiceDefinition, ...] = (
    ServiceDefinition(
        id=ServiceId.PATIENT_VIEW,
        hook="patient-view",
        title="MoE-Health admission risk",
        description=(
            "Risk of in-hospital death, a stay longer than 7 days and readmission within "
            "30 days for the current admission, from vitals/labs, notes and chest X-rays "
            "(multimodal mixture-of-experts model)."
        ),
        encounter_in_context=False,
        usage_requirements=_USAGE,
    ),
    ServiceDefinition(
        id=ServiceId.ENCOUNTER_DISCHARGE,
        hook="encounter-discharge",
        title="MoE-Health readmission risk at discharge",
        description=(
            "At discharge: risk of readmission within 30 days (with mortality and long-stay "
            "risks for context) for the encounter being closed."
        ),
        encounter_in_context=True,
        usage_requirements=_USAGE,
    ),
)


def service_by_id(service_id: str) -> ServiceDefinition | None:
    """The service with that id, or ``None``."""
    for service in SERVICES:
        if service.id == service_id:
            return service
    return None
