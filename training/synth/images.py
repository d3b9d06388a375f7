"""Synthetic chest radiographs: chest-like pixels with an opacity blob, saved as DICOM.

A 256x256 frontal film shows the body outline, two dark lung fields, the mediastinum
and heart, the spine and faint ribs. Lung opacity (the latent ``opacity`` of
``outcomes.py``) appears as a bright blob in the right lower lung whose presence and
radius grow with it (``blob_radius``); a lateral film shows it too. Files are
written by ``fhir_adapters.imaging.synthetic``, the chest X-ray DICOM writer. Every file is
marked synthetic (PatientName ``Synthetic^...``, PatientIdentityRemoved YES).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "CR_SOP_CLASS",
    "DX_SOP_CLASS",
    "IMAGE_SIZE",
    "SynthImage",
    "blob_radius",
    "chest_pixels",
    "dicom_uid",
    "write_dicom",
]

IMAGE_SIZE = 256
DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
CR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
_TOP = 65535  # 16-bit stored values


@dataclass(frozen=True, slots=True)
class SynthImage:
    """One film of a study, before it is written."""

    sop_uid: str
    series_uid: str
    view: str  # DICOM ViewPosition: "AP", "PA" or "LL"
    modality: str  # "DX" or "CR"
    monochrome1: bool  # stored inverted (bright = less dense), as many CR systems do


def dicom_uid(seed: int, *parts: object) -> str:
    """A deterministic DICOM UID under the UUID root 2.25 (ISO/IEC 9834-8)."""
    name = "/".join(str(p) for p in (seed, *parts))
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'moe-health-synth/' + name).int}"


def blob_radius(opacity: float) -> float:
    """Radius in pixels of the opacity blob; 0 (clear lungs) when ``opacity < -0.3``."""
    if opacity < -0.3:
        return 0.0
    return float(min(8.0 + 16.0 * (opacity + 0.3), 48.0))


def chest_pixels(
    radius: float, view: str, rng: np.random.Generator, size: int = IMAGE_SIZE
) -> npt.NDArray[np.float32]:
    """A chest-like film in [0, 1], bright = dense (MONOCHROME2 sense)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size  # (H, W)
    cx = 0.5 + float(rng.normal(0, 0.015))
    cy = 0.52 + float(rng.normal(0, 0.015))
    img = np.full((size, size), 0.04, dtype=np.float32)
    body = ((xx - cx) / 0.46) ** 2 + ((yy - cy) / 0.52) ** 2 < 1.0
    img[body] = 0.55
    lateral = view not in ("AP", "PA")
    if lateral:
        lungs = ((xx - cx) / 0.26) ** 2 + ((yy - cy + 0.04) / 0.34) ** 2 < 1.0
        img[lungs] = 0.18
        spine = (xx > cx + 0.22) & (xx < cx + 0.3) & body
        img[spine] = 0.8
        bx, by = cx + 0.02, cy + 0.12
    else:
        for side in (-1.0, 1.0):
            lung = ((xx - cx - side * 0.18) / 0.14) ** 2 + ((yy - cy + 0.02) / 0.33) ** 2 < 1.0
            img[lung] = 0.16
        heart = ((xx - cx - 0.05) / 0.12) ** 2 + ((yy - cy - 0.12) / 0.13) ** 2 < 1.0
        img[heart] = 0.7
        spine = (np.abs(xx - cx) < 0.035) & body
        img[spine] = np.maximum(img[spine], 0.75)
        bx, by = cx - 0.18, cy + 0.12  # right lower lobe (image left)
    ribs = 0.04 * (np.sin(yy * 60.0 + 2.0 * np.abs(xx - cx)) > 0.7)
    img = img + ribs.astype(np.float32) * body
    if radius > 0:
        r = radius / size
        bx += float(rng.normal(0, 0.02))
        by += float(rng.normal(0, 0.02))
        blob = np.exp(-(((xx - bx) ** 2 + (yy - by) ** 2) / (2 * r * r)))
        img = img + 0.45 * blob.astype(np.float32)
    img = img + rng.normal(0.0, 0.02, size=img.shape).astype(np.float32)
    clipped: npt.NDArray[np.float32] = np.clip(img, 0.0, 1.0).astype(np.float32)
    return clipped


def write_dicom(
    path: Path,
    pixels: npt.NDArray[np.float32],
    image: SynthImage,
    *,
    study_uid: str,
    patient_id: str,
    patient_name: str,
    taken: datetime,
    accession: str,
) -> None:
    """Write ``pixels`` (in [0, 1], bright = dense) as a 16-bit DICOM file at ``path``.

    Uses the imaging package's chest X-ray writer, then marks the file synthetic.
    """
    from fhir_adapters.imaging.synthetic import CxrDicomSpec, build_cxr_dataset

    spec = CxrDicomSpec(
        view_position=image.view,
        acquired_at=taken,
        modality=image.modality,
        monochrome1=image.monochrome1,
        study_uid=study_uid,
        series_uid=image.series_uid,
        sop_uid=image.sop_uid,
        patient_id=patient_id,
        series_description=f"CHEST {image.view}",
    )
    stored = np.round(pixels * _TOP).astype(np.uint16)
    ds = build_cxr_dataset(stored, spec)
    ds.PatientName = patient_name
    ds.DeidentificationMethod = "synthetic data: no real patient"
    ds.AccessionNumber = accession
    ds.StudyDescription = "CHEST RADIOGRAPH (SYNTHETIC)"
    ds.SeriesNumber = 1 if image.view in ("AP", "PA") else 2
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
