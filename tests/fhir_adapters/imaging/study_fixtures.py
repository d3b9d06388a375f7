"""Small FHIR ImagingStudy / attachment builders shared by the imaging tests."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from fhir_adapters.imaging.synthetic import CxrDicomSpec, cxr_dicom_bytes

STUDY_UID = "2.25.1000"
T0 = datetime(2024, 2, 1, 8, 0, tzinfo=UTC)


def imaging_study(
    uid: str = STUDY_UID,
    *,
    series: list[tuple[str, str]] | None = None,
    endpoint: str | None = None,
    started: str | None = "2024-02-01T08:00:00Z",
    study_id: str = "cxr1",
) -> dict[str, Any]:
    """An ImagingStudy; ``series`` lists (series UID, SOP UID) pairs."""
    study: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "id": study_id,
        "status": "available",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}],
        "subject": {"reference": "Patient/p1"},
        "series": [
            {"uid": s, "modality": {"code": "DX"}, "instance": [{"uid": i}]}
            for s, i in series or []
        ],
    }
    if started:
        study["started"] = started
    if endpoint:
        study["endpoint"] = [{"reference": f"Endpoint/{endpoint}"}]
    return study


def endpoint(endpoint_id: str, address: str) -> dict[str, Any]:
    """An active DICOMweb Endpoint."""
    return {
        "resourceType": "Endpoint",
        "id": endpoint_id,
        "status": "active",
        "connectionType": {"code": "dicom-wado-rs"},
        "payloadType": [{"text": "DICOM"}],
        "address": address,
    }


def film(
    pixels: npt.NDArray[np.integer], view: str, n: int, uid: str = STUDY_UID, **kw: Any
) -> tuple[CxrDicomSpec, bytes]:
    """One film of the study: its spec and DICOM bytes (UIDs derived from ``n``)."""
    spec = CxrDicomSpec(
        view_position=view,
        acquired_at=kw.pop("acquired_at", T0),
        study_uid=uid,
        series_uid=f"{uid}.{n}",
        sop_uid=f"{uid}.{n}.1",
        **kw,
    )
    return spec, cxr_dicom_bytes(pixels, spec)


def document_reference(
    doc_id: str, data: bytes | None = None, url: str | None = None, study_id: str = "cxr1"
) -> dict[str, Any]:
    """A DocumentReference carrying one application/dicom attachment for ``study_id``."""
    attachment: dict[str, Any] = {"contentType": "application/dicom"}
    if data is not None:
        attachment["data"] = base64.b64encode(data).decode()
    if url is not None:
        attachment["url"] = url
    return {
        "resourceType": "DocumentReference",
        "id": doc_id,
        "status": "current",
        "content": [{"attachment": attachment}],
        "context": {"related": [{"reference": f"ImagingStudy/{study_id}"}]},
    }
