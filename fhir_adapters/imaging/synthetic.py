"""Build valid chest X-ray DICOM files (DX / CR / Secondary Capture) from pixel arrays.

Used by the tests (from the NIH ChestX-ray14 PNGs in ``../shared/data/cxr-nih-sample``)
and usable by any generator that needs DICOM files on disk. Encodings: native
(explicit VR little endian), RLE, JPEG baseline (8-bit, encoded with Pillow and
encapsulated), JPEG 2000 lossless / lossy (pylibjpeg-openjpeg through pydicom).
MONOCHROME1 files store ``max - value``, so they decode to the same image as the
MONOCHROME2 original.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000,
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

__all__ = [
    "CxrDicomSpec",
    "Encoding",
    "build_cxr_dataset",
    "cxr_dicom_bytes",
    "load_png",
    "write_cxr_dicom",
]

_SOP_CLASSES = {
    "DX": DigitalXRayImageStorageForPresentation,
    "CR": ComputedRadiographyImageStorage,
    "OT": SecondaryCaptureImageStorage,  # Secondary Capture: Modality "OT"
}
_JPEG_QUALITY = 95  # visually lossless; the tests bound the error
_J2K_LOSSY_RATIO = 10.0  # compression ratio for lossy JPEG 2000


class Encoding(StrEnum):
    """Transfer syntaxes the writer can produce."""

    NATIVE = "native"
    RLE = "rle"
    JPEG_BASELINE = "jpeg-baseline"
    JPEG2000_LOSSLESS = "jpeg2000-lossless"
    JPEG2000 = "jpeg2000"


@dataclass(frozen=True, slots=True)
class CxrDicomSpec:
    """What to write besides the pixels. UIDs default to fresh ``2.25`` UIDs."""

    view_position: str = "PA"  # "AP", "PA", "LL", ... ; "" writes no ViewPosition
    acquired_at: datetime = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    modality: str = "DX"  # "DX", "CR" or "OT" (Secondary Capture)
    monochrome1: bool = False
    encoding: Encoding = Encoding.NATIVE
    study_uid: str = ""
    series_uid: str = ""
    sop_uid: str = ""
    patient_id: str = "SYNTHETIC"
    window: tuple[float, float] | None = None  # (center, width) in stored units
    rescale: tuple[float, float] | None = None  # (slope, intercept)
    series_description: str = ""


def load_png(path: Path) -> npt.NDArray[np.uint8]:
    """An 8-bit greyscale PNG as a (H, W) uint8 array (colour is converted to luminance)."""
    with Image.open(path) as img:
        return np.asarray(img.convert("L"), dtype=np.uint8)


def _bits(pixels: npt.NDArray[np.integer]) -> int:
    return 8 if pixels.dtype == np.uint8 else 16


def build_cxr_dataset(pixels: npt.NDArray[np.integer], spec: CxrDicomSpec) -> FileDataset:
    """A DICOM dataset holding ``pixels`` ((H, W) uint8 or uint16, bright = dense)."""
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"need (H, W) uint8/uint16 pixels, got {pixels.dtype} {pixels.shape}")
    if spec.encoding is Encoding.JPEG_BASELINE and pixels.dtype != np.uint8:
        raise ValueError("JPEG baseline holds 8-bit samples only")
    sop_class = _SOP_CLASSES.get(spec.modality.upper())
    if sop_class is None:
        raise ValueError(f"modality {spec.modality!r} not one of {sorted(_SOP_CLASSES)}")
    bits = _bits(pixels)
    stored = (np.iinfo(pixels.dtype).max - pixels) if spec.monochrome1 else pixels
    sop_uid = UID(spec.sop_uid) if spec.sop_uid else generate_uid()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = spec.study_uid or generate_uid()
    ds.SeriesInstanceUID = spec.series_uid or generate_uid()
    ds.Modality = spec.modality.upper()
    ds.PatientID = spec.patient_id
    ds.PatientName = "Synthetic^Film"
    ds.PatientIdentityRemoved = "YES"
    taken = spec.acquired_at.astimezone(UTC)
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = taken.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = taken.strftime("%H%M%S")
    ds.AcquisitionDateTime = taken.strftime("%Y%m%d%H%M%S") + "+0000"
    ds.TimezoneOffsetFromUTC = "+0000"
    ds.BodyPartExamined = "CHEST"
    ds.StudyDescription = "CHEST RADIOGRAPH"
    if spec.series_description:
        ds.SeriesDescription = spec.series_description
    if spec.view_position:
        ds.ViewPosition = spec.view_position
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if spec.monochrome1 else "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if spec.window is not None:
        ds.WindowCenter, ds.WindowWidth = spec.window
    if spec.rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = spec.rescale
        ds.RescaleType = "US"
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    _encode(ds, np.ascontiguousarray(stored), spec.encoding)
    return ds


def _encode(ds: FileDataset, stored: npt.NDArray[np.integer], encoding: Encoding) -> None:
    if encoding is Encoding.NATIVE:
        return
    if encoding is Encoding.RLE:
        ds.compress(RLELossless, stored, generate_instance_uid=False)
    elif encoding is Encoding.JPEG2000_LOSSLESS:
        ds.compress(JPEG2000Lossless, stored, generate_instance_uid=False)
    elif encoding is Encoding.JPEG2000:
        ds.compress(JPEG2000, stored, j2k_cr=[_J2K_LOSSY_RATIO], generate_instance_uid=False)
        ds.LossyImageCompression = "01"
    elif encoding is Encoding.JPEG_BASELINE:
        buffer = io.BytesIO()
        Image.fromarray(stored, mode="L").save(buffer, format="JPEG", quality=_JPEG_QUALITY)
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"


def cxr_dicom_bytes(pixels: npt.NDArray[np.integer], spec: CxrDicomSpec) -> bytes:
    """The DICOM Part 10 file for ``pixels`` as bytes."""
    buffer = io.BytesIO()
    build_cxr_dataset(pixels, spec).save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_cxr_dicom(path: Path, pixels: npt.NDArray[np.integer], spec: CxrDicomSpec) -> Path:
    """Write the DICOM Part 10 file for ``pixels`` at ``path`` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    build_cxr_dataset(pixels, spec).save_as(path, enforce_file_format=True)
    return path
