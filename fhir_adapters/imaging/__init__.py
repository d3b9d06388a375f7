"""Chest X-ray images for ``PatientRecord``: ImagingStudy -> DICOM -> pixels.

``reader`` decodes DICOM (pydicom + pylibjpeg), ``header`` reads view and time,
``source`` defines the ``ImageSource`` protocol the record assembler calls per
ImagingStudy; ``dicomweb``, ``attachments`` and ``local_folder`` implement it.
"""

from __future__ import annotations

from fhir_adapters.imaging.attachments import AttachmentSource, BinaryResolver
from fhir_adapters.imaging.dicomweb import AsyncDicomWebClient, DicomWebClient, DicomWebSource
from fhir_adapters.imaging.errors import (
    DicomDecodeError,
    ImageReferenceError,
    ImageRetrievalError,
    ImagingError,
    TruncatedDicomError,
    UnsupportedImageError,
)
from fhir_adapters.imaging.header import DicomHeader, read_header
from fhir_adapters.imaging.local_folder import LocalFolderSource
from fhir_adapters.imaging.reader import (
    DicomImage,
    ImageReader,
    PydicomReader,
    content_hash,
    read_dicom_file,
)
from fhir_adapters.imaging.source import (
    CombinedSource,
    ImagesAndNotes,
    ImageSource,
    frontal_view_notes,
    study_uid,
)

__all__ = [
    "AsyncDicomWebClient",
    "AttachmentSource",
    "BinaryResolver",
    "CombinedSource",
    "DicomDecodeError",
    "DicomHeader",
    "DicomImage",
    "DicomWebClient",
    "DicomWebSource",
    "ImageReader",
    "ImageReferenceError",
    "ImageRetrievalError",
    "ImageSource",
    "ImagesAndNotes",
    "ImagingError",
    "LocalFolderSource",
    "PydicomReader",
    "TruncatedDicomError",
    "UnsupportedImageError",
    "content_hash",
    "frontal_view_notes",
    "read_dicom_file",
    "read_header",
    "study_uid",
]
