"""The ``ImageSource`` protocol: one ImagingStudy in, ImageRefs and QualityNotes out.

The record assembler calls ``source.images_for(study, related)`` for every
ImagingStudy of an admission and appends the results to ``PatientRecord.images`` /
``.quality``; it alone filters by ``prediction_time`` (every ImageRef carries its
time). ``related`` holds the other resources that may belong to the study:
Endpoint (DICOMweb address), DocumentReference / Media / Binary (DICOM attachments).
Sources never raise for a bad image; they return a QualityNote instead.

Also here: the FHIR-side helpers every source needs (study UID, study time, the
"no frontal view" note) and ``CombinedSource``, which asks several sources in turn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from fhir_adapters.fhir_time import parse_fhir_input_time
from fhir_adapters.imaging.dicom_keys import REASON_NO_FRONTAL_VIEW, REASON_NO_TIME
from fhir_adapters.imaging.header import DicomHeader
from fhir_adapters.imaging.reader import DicomSource, ImageReader
from moe_core.records import FRONTAL_VIEWS, ImageRef, QualityNote

__all__ = [
    "DICOM_UID_SYSTEM",
    "CombinedSource",
    "ImageSource",
    "ImagesAndNotes",
    "frontal_view_notes",
    "image_ref",
    "lazy_pixels",
    "study_label",
    "study_time",
    "study_uid",
]

DICOM_UID_SYSTEM = "urn:dicom:uid"  # ImagingStudy.identifier system for the Study Instance UID
_OID_PREFIX = "urn:oid:"
Resource = Mapping[str, Any]
ImagesAndNotes = tuple[list[ImageRef], list[QualityNote]]


@runtime_checkable
class ImageSource(Protocol):
    """Produces the chest X-ray ImageRefs of one ImagingStudy."""

    def images_for(self, study: Resource, related: Sequence[Resource]) -> ImagesAndNotes:
        """ImageRefs (any view, with times) and QualityNotes for one ImagingStudy JSON."""
        ...


def study_label(study: Resource) -> str:
    """``"ImagingStudy/<id>"``: the QualityNote source (no patient identifiers)."""
    return f"ImagingStudy/{study.get('id', '?')}"


def study_uid(study: Resource) -> str:
    """The DICOM Study Instance UID from ``identifier`` (``urn:dicom:uid``), or ``""``."""
    for ident in study.get("identifier") or []:
        value = str(ident.get("value") or "")
        if ident.get("system") == DICOM_UID_SYSTEM or value.startswith(_OID_PREFIX):
            return value.removeprefix(_OID_PREFIX)
    return ""


def study_time(study: Resource, series_uid: str = "") -> datetime | None:
    """``series.started`` of the matching series, else ``ImagingStudy.started``."""
    for series in study.get("series") or []:
        if series_uid and series.get("uid") == series_uid:
            started = parse_fhir_input_time(series.get("started"))
            if started is not None:
                return started
    return parse_fhir_input_time(study.get("started"))


def lazy_pixels(
    fetch: Callable[[], DicomSource], reader: ImageReader
) -> Callable[[], npt.NDArray[np.float32]]:
    """A loader that fetches and decodes only when the model asks for the pixels."""

    def load() -> npt.NDArray[np.float32]:
        return reader.read(fetch()).pixels

    return load


def image_ref(
    header: DicomHeader,
    study: Resource,
    *,
    loader: Callable[[], npt.NDArray[np.float32]] | None = None,
    pixels: npt.NDArray[np.float32] | None = None,
    content_key: str | None = None,
) -> ImageRef | QualityNote:
    """An ImageRef for one instance, or a QualityNote when its time is unknown.

    Time: the DICOM header's, else the FHIR series/study ``started``. The view is
    already upper case (``header.view_position``). ``content_key`` defaults to the
    SOPInstanceUID.
    """
    moment = header.acquired_at or study_time(study, header.series_uid)
    if moment is None:
        return QualityNote(study_label(study), REASON_NO_TIME, f"instance {header.sop_uid}")
    return ImageRef(
        time=moment,
        view_position=header.view_position,
        study_id=header.study_uid or study_uid(study) or study_label(study),
        pixels=pixels,
        loader=loader,
        content_key=content_key or header.sop_uid or None,
    )


def frontal_view_notes(study: Resource, refs: Sequence[ImageRef]) -> list[QualityNote]:
    """A note when a study delivered images but none is frontal (e.g. lateral-only)."""
    if not refs or any(r.view_position in FRONTAL_VIEWS for r in refs):
        return []
    views = ", ".join(sorted({r.view_position for r in refs}))
    return [QualityNote(study_label(study), REASON_NO_FRONTAL_VIEW, f"views: {views}")]


class CombinedSource:
    """Asks each source in order; the first that yields images wins.

    Notes from sources that yielded nothing are kept only when no source succeeds,
    so an attachment-less study served over DICOMweb does not report a failure.
    """

    def __init__(self, sources: Iterable[ImageSource]) -> None:
        self.sources = tuple(sources)

    def images_for(self, study: Resource, related: Sequence[Resource]) -> ImagesAndNotes:
        """The first non-empty answer, with its notes; else every source's notes."""
        notes: list[QualityNote] = []
        for source in self.sources:
            refs, found = source.images_for(study, related)
            if refs:
                return refs, found
            notes.extend(found)
        return [], notes
