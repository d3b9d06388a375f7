"""Chest X-ray images for ``PatientRecord``: ImagingStudy -> DICOM -> pixels.

``reader`` decodes DICOM (pydicom + pylibjpeg), ``header`` reads view and time,
``source`` defines the ``ImageSource`` protocol the record assembler calls per
ImagingStudy; ``dicomweb``, ``attachments`` and ``local_folder`` implement it.
"""

from __future__ import annotations

from fhir_adapters.imaging.errors import (
    DicomDecodeError,
    ImageReferenceError,
    ImageRetrievalError,
    ImagingError,
    TruncatedDicomError,
    UnsupportedImageError,
)
from fhir_adapters.imaging.header import DicomHeader, read_header
from fhir_adapters.imaging.reader import DicomImage, ImageReader, PydicomReader, content_hash
from fhir_adapters.imaging.source import (
    CombinedSource,
    ImagesAndNotes,
    ImageSource,
    frontal_view_notes,
    study_uid,
)

__all__ = [
    "CombinedSource",
    "DicomDecodeError",
    "DicomHeader",
    "DicomImage",
    "ImageReader",
    "ImageReferenceError",
    "ImageRetrievalError",
    "ImageSource",
    "ImagesAndNotes",
    "ImagingError",
    "PydicomReader",
    "TruncatedDicomError",
    "UnsupportedImageError",
    "content_hash",
    "frontal_view_notes",
    "read_header",
    "study_uid",
]
