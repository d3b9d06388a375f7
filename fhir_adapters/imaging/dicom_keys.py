"""Names the imaging path shares: media types, view codes, quality-note reasons.

Kept in one module so that no DICOM keyword, media type or reason string is spelled
twice across the reader, the image sources and the tests.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DICOM_JSON_MEDIA_TYPE",
    "DICOM_MEDIA_TYPE",
    "DICOM_SUFFIXES",
    "MULTIPART_DICOM_ACCEPT",
    "RADIOGRAPH_MODALITIES",
    "REASON_NO_FRONTAL_VIEW",
    "REASON_NO_TIME",
    "REASON_STUDY_MISMATCH",
    "VIEW_CODE_MEANINGS",
    "VIEW_TEXT_TOKENS",
    "VIEW_UNKNOWN",
]

DICOM_MEDIA_TYPE: Final = "application/dicom"
DICOM_JSON_MEDIA_TYPE: Final = "application/dicom+json"
# PS3.18 8.7.3.5: ask for the stored transfer syntax ("*"), so no server-side transcoding.
MULTIPART_DICOM_ACCEPT: Final = 'multipart/related; type="application/dicom"; transfer-syntax=*'
DICOM_SUFFIXES: Final = (".dcm", ".dicom", ".dic", "")  # "" : PACS exports often have none

# Modalities a chest radiograph arrives as; "" (absent) is let through, OT = Secondary Capture.
RADIOGRAPH_MODALITIES: Final = frozenset({"CR", "DX", "DR", "OT", ""})
VIEW_UNKNOWN: Final = "UNKNOWN"  # ImageRef.view_position when no attribute names a view

# ViewCodeSequence (0054,0220) -> ViewPosition: code meanings, SCT codes and their
# retired SRT aliases from PS3.16 CID 4010 ("DX View").
VIEW_CODE_MEANINGS: Final = {
    "antero-posterior": "AP",
    "postero-anterior": "PA",
    "lateral": "LATERAL",
    "left lateral": "LL",
    "right lateral": "RL",
    "399348003": "AP",
    "R-10206": "AP",
    "399214001": "PA",
    "272479007": "PA",
    "R-10214": "PA",
    "399067008": "LATERAL",
    "R-102CD": "LATERAL",
    "399173006": "LL",
    "R-10236": "LL",
    "399198007": "RL",
    "R-10232": "RL",
}

# Whole-word tokens in SeriesDescription / ProtocolName / AcquisitionDeviceProcessingDescription.
VIEW_TEXT_TOKENS: Final = {
    "AP": "AP",
    "PA": "PA",
    "LAT": "LATERAL",
    "LATERAL": "LATERAL",
    "LL": "LL",
    "RL": "RL",
}

REASON_NO_FRONTAL_VIEW: Final = "no frontal chest X-ray (AP/PA) in study"
REASON_NO_TIME: Final = "image time unknown"
REASON_STUDY_MISMATCH: Final = "DICOM belongs to another study"
