"""DICOM carried as FHIR attachments: DocumentReference, Media and Binary.

An attachment belongs to an ImagingStudy when its resource points at the study:
``DocumentReference.context.related`` or ``Media.partOf`` / ``Media.basedOn`` naming
``ImagingStudy/<id>`` (relative or absolute URL) or the study's DICOM UID as an
identifier. Only ``contentType: application/dicom`` attachments are read. Bytes come
from ``data`` (base64), from a ``Binary`` among the related resources (``url`` =
``Binary/<id>``), or through a resolver (``FhirClient.binary`` fits) for any other
``url``. Headers are read at once (view and time decide frontal selection); pixels
are decoded only when the ImageRef is loaded.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fhir_adapters.imaging.dicom_keys import (
    DICOM_MEDIA_TYPE,
    RADIOGRAPH_MODALITIES,
    REASON_STUDY_MISMATCH,
)
from fhir_adapters.imaging.errors import ImageReferenceError, ImageRetrievalError, ImagingError
from fhir_adapters.imaging.reader import ImageReader, PydicomReader, content_hash
from fhir_adapters.imaging.source import (
    ImagesAndNotes,
    Resource,
    frontal_view_notes,
    image_ref,
    lazy_pixels,
    study_label,
    study_uid,
)
from moe_core.records import ImageRef, QualityNote

__all__ = ["AttachmentSource", "BinaryResolver", "dicom_attachments", "links_to_study"]

BinaryResolver = Callable[[str], tuple[bytes, str | None]]  # same shape as FhirClient.binary


def _references(resource: Resource) -> list[Mapping[str, Any]]:
    kind = resource.get("resourceType")
    if kind == "DocumentReference":
        return list((resource.get("context") or {}).get("related") or [])
    if kind == "Media":
        return [*(resource.get("partOf") or []), *(resource.get("basedOn") or [])]
    return []


def links_to_study(resource: Resource, study: Resource) -> bool:
    """Whether a DocumentReference / Media points at this ImagingStudy."""
    own_id = f"ImagingStudy/{study.get('id', '')}"
    uid = study_uid(study)
    for ref in _references(resource):
        target = str(ref.get("reference") or "")
        if study.get("id") and (target == own_id or target.endswith("/" + own_id)):
            return True
        value = str((ref.get("identifier") or {}).get("value") or "").removeprefix("urn:oid:")
        if uid and value == uid:
            return True
    return False


def dicom_attachments(resource: Resource) -> list[Mapping[str, Any]]:
    """The ``application/dicom`` attachments of a DocumentReference or Media."""
    if resource.get("resourceType") == "DocumentReference":
        found = [c.get("attachment") or {} for c in resource.get("content") or []]
    else:
        found = [resource.get("content") or {}]
    return [a for a in found if str(a.get("contentType", "")).split(";")[0] == DICOM_MEDIA_TYPE]


class AttachmentSource:
    """``ImageSource`` for DICOM attachments linked to the ImagingStudy."""

    def __init__(
        self,
        resolver: BinaryResolver | None = None,
        *,
        reader: ImageReader | None = None,
        modalities: frozenset[str] = RADIOGRAPH_MODALITIES,
    ) -> None:
        self.resolver = resolver
        self.reader: ImageReader = reader or PydicomReader()
        self.modalities = modalities

    def _bytes(self, attachment: Mapping[str, Any], related: Sequence[Resource]) -> bytes:
        data = attachment.get("data")
        if isinstance(data, str):
            try:
                return base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ImageReferenceError(f"attachment data is not base64: {exc}") from exc
        url = str(attachment.get("url") or "")
        if not url:
            raise ImageReferenceError("attachment has neither data nor url")
        if url.startswith("Binary/"):
            for res in related:
                if res.get("resourceType") == "Binary" and res.get("id") == url[7:]:
                    return self._bytes(res, ())
        if self.resolver is None:
            raise ImageReferenceError(f"no resolver configured for attachment url {url}")
        try:
            content, _ = self.resolver(url)
        except ImagingError:
            raise
        except Exception as exc:  # any client error: the image is unavailable, not fatal
            raise ImageRetrievalError(f"{url}: {type(exc).__name__}: {exc}") from exc
        return content

    def _one(
        self, attachment: Mapping[str, Any], study: Resource, related: Sequence[Resource]
    ) -> ImageRef | QualityNote | None:
        label = study_label(study)
        try:
            data = self._bytes(attachment, related)
            header = self.reader.read_header(data)
        except ImagingError as exc:
            return QualityNote(label, exc.reason, str(exc))
        uid = study_uid(study)
        if uid and header.study_uid and header.study_uid != uid:
            return QualityNote(label, REASON_STUDY_MISMATCH, f"instance {header.sop_uid}")
        if header.modality not in self.modalities:
            return None
        key = header.sop_uid or content_hash(data)
        return image_ref(
            header, study, loader=lazy_pixels(lambda: data, self.reader), content_key=key
        )

    def images_for(self, study: Resource, related: Sequence[Resource]) -> ImagesAndNotes:
        """ImageRefs for every DICOM attachment that points at this study."""
        refs: list[ImageRef] = []
        notes: list[QualityNote] = []
        for resource in related:
            if not links_to_study(resource, study):
                continue
            for attachment in dicom_attachments(resource):
                made = self._one(attachment, study, related)
                if isinstance(made, QualityNote):
                    notes.append(made)
                elif made is not None:
                    refs.append(made)
        return refs, [*notes, *frontal_view_notes(study, refs)]
