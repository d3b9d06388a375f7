"""Synthetic chest radiographs: chest-like pixels with an opacity blob, saved as DICOM.

A 256x256 frontal film shows the body outline, two dark lung fields, the mediastinum
and heart, the spine and faint ribs. Lung opacity (the latent ``opacity`` of
``outcomes.py``) appears as a bright blob in the right lower lung whose presence and
radius grow with it (``blob_radius``); a lateral film shows it too. Every file is
marked synthetic (PatientName ``Synthetic^...``, PatientIdentityRemoved YES).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

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
_BITS = 12


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
    """Write ``pixels`` (bright = dense) as a 12-bit DICOM file at ``path``."""
    meta = FileMetaDataset()
    sop_class = DX_SOP_CLASS if image.modality == "DX" else CR_SOP_CLASS
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(image.sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = image.sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = image.series_uid
    ds.Modality = image.modality
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "synthetic data: no real patient"
    ds.AccessionNumber = accession
    ds.StudyDate = ds.ContentDate = ds.AcquisitionDate = taken.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = ds.AcquisitionTime = taken.strftime("%H%M%S")
    ds.TimezoneOffsetFromUTC = "+0000"
    ds.StudyDescription = "CHEST RADIOGRAPH (SYNTHETIC)"
    ds.SeriesDescription = f"CHEST {image.view}"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = image.view
    ds.SeriesNumber = 1 if image.view in ("AP", "PA") else 2
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if image.monochrome1 else "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = _BITS
    ds.HighBit = _BITS - 1
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [1.4, 1.4]
    top = (1 << _BITS) - 1
    stored = pixels if not image.monochrome1 else 1.0 - pixels
    ds.PixelData = np.round(stored * top).astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
