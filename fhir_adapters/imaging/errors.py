"""Errors raised on the imaging path; callers turn them into ``QualityNote`` s.

The hierarchy::

    ImagingError                     anything that keeps one image out of a record
    ├── DicomDecodeError             bytes are not a readable DICOM image
    │   ├── TruncatedDicomError      the file or its pixel data ends early
    │   └── UnsupportedImageError    readable, but not a 2-D greyscale/colour image
    ├── ImageRetrievalError          a server or URL did not deliver the bytes
    └── ImageReferenceError          a FHIR resource does not say where the image is

Only these types leave the imaging package, so a record assembler needs a single
``except ImagingError`` to keep one bad image from failing the whole patient. A lazy
``ImageRef.loader`` raises them too; decode and reference errors are also
``ValueError`` s and retrieval errors ``OSError`` s, so code that loads pixels and
catches ``(ValueError, OSError)`` (``moe_core.features``) handles them without
importing this package.
"""

from __future__ import annotations

__all__ = [
    "DicomDecodeError",
    "ImageReferenceError",
    "ImageRetrievalError",
    "ImagingError",
    "TruncatedDicomError",
    "UnsupportedImageError",
]


class ImagingError(Exception):
    """Base class: one image could not be produced. ``reason`` is a QualityNote reason."""

    reason = "image unusable"


class DicomDecodeError(ImagingError, ValueError):
    """The bytes could not be parsed or decoded as a DICOM image."""

    reason = "corrupt DICOM"


class TruncatedDicomError(DicomDecodeError):
    """The DICOM stream or its pixel data ends before the header says it should."""

    reason = "truncated DICOM"


class UnsupportedImageError(DicomDecodeError):
    """A valid DICOM object that holds no usable 2-D image (no pixels, a volume, ...)."""

    reason = "unsupported DICOM image"


class ImageRetrievalError(ImagingError, OSError):
    """A DICOMweb server or an attachment URL failed (HTTP status, timeout, bad body)."""

    reason = "image retrieval failed"


class ImageReferenceError(ImagingError, ValueError):
    """A FHIR resource names no endpoint, attachment or instance to fetch."""

    reason = "image reference missing"
