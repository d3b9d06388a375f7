"""FHIR names used by the adapters: code systems, extension URLs, resource types, statuses.

Every FHIR string literal the adapters match on lives here, once.
"""

from __future__ import annotations

__all__ = [
    "ACT_CODE_SYSTEM",
    "ATTACHMENT_HTML",
    "ATTACHMENT_PLAIN",
    "ATTACHMENT_XHTML",
    "IGNORED_STATUSES",
    "INPATIENT_CLASS_CODES",
    "LOINC_SYSTEM",
    "MIMIC_ITEMID_SYSTEM_MARK",
    "PATIENT_COMPARTMENT_REFS",
    "RT_BINARY",
    "RT_DIAGNOSTIC_REPORT",
    "RT_DOCUMENT_REFERENCE",
    "RT_ENCOUNTER",
    "RT_ENDPOINT",
    "RT_IMAGING_STUDY",
    "RT_OBSERVATION",
    "RT_PATIENT",
    "RT_RISK_ASSESSMENT",
    "SUPPORTED_TYPES",
    "TEXT_CONTENT_PREFIXES",
    "UCUM_SYSTEM",
    "US_CORE_ETHNICITY_URL",
    "US_CORE_RACE_URL",
]

LOINC_SYSTEM = "http://loinc.org"
UCUM_SYSTEM = "http://unitsofmeasure.org"
ACT_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
# Any coding system URL containing this marks MIMIC-IV itemids (chartevents / labevents),
# e.g. "http://mimic.mit.edu/fhir/mimic/CodeSystem/mimic-chartevents-d-items".
MIMIC_ITEMID_SYSTEM_MARK = "mimic"

US_CORE_RACE_URL = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
US_CORE_ETHNICITY_URL = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"

RT_PATIENT = "Patient"
RT_ENCOUNTER = "Encounter"
RT_OBSERVATION = "Observation"
RT_DOCUMENT_REFERENCE = "DocumentReference"
RT_DIAGNOSTIC_REPORT = "DiagnosticReport"
RT_IMAGING_STUDY = "ImagingStudy"
RT_BINARY = "Binary"
RT_ENDPOINT = "Endpoint"  # DICOMweb address an ImagingStudy names; no patient of its own
RT_RISK_ASSESSMENT = "RiskAssessment"

# Resource types the record assembler reads; anything else is counted and ignored.
SUPPORTED_TYPES = frozenset(
    {
        RT_PATIENT,
        RT_ENCOUNTER,
        RT_OBSERVATION,
        RT_DOCUMENT_REFERENCE,
        RT_DIAGNOSTIC_REPORT,
        RT_IMAGING_STUDY,
    }
)

# Where each resource type names its patient, in the order tried.
PATIENT_COMPARTMENT_REFS = ("subject", "patient")

# v3-ActCode encounter classes that are hospital admissions (inpatient).
INPATIENT_CLASS_CODES = frozenset({"IMP", "ACUTE", "NONAC", "inpatient"})

# Resources with these statuses never become inputs.
IGNORED_STATUSES = frozenset({"entered-in-error", "cancelled"})

ATTACHMENT_PLAIN = "text/plain"
ATTACHMENT_HTML = "text/html"
ATTACHMENT_XHTML = "application/xhtml+xml"
# Attachment content types that hold note text (anything else is an image, a PDF, DICOM...).
TEXT_CONTENT_PREFIXES = ("text/", "application/xhtml")
