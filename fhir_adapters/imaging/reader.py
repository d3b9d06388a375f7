"""DICOM bytes or files -> a 2-D float32 image in [0, 1] plus its header.

An ``ImageReader`` interface with pydicom behind it, in the manner of MONAI's
``image_reader``: sources call ``reader.read(...)`` and never touch pydicom.

Pixel pipeline (PS3.3 C.11 / C.7.6.3.1.2), in order:

1. decode the first frame only (multi-frame -> frame 0), any transfer syntax pydicom
   and its plugins decode: native, RLE, JPEG baseline/extended/lossless (pylibjpeg-
   libjpeg), JPEG 2000 (pylibjpeg-openjpeg);
2. colour (RGB / YBR, converted to RGB by pydicom) -> luminance, ITU-R BT.601;
3. Modality LUT: RescaleSlope/Intercept or ModalityLUTSequence (``apply_modality_lut``);
4. VOI LUT: VOILUTSequence preferred, else WindowCenter/Width (``apply_voi_lut``),
   scaled by the output range pydicom maps the window onto; no VOI at all -> min-max
   of the frame;
5. MONOCHROME1 -> ``1 - x`` so that bright always means dense.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut

from fhir_adapters.imaging.dicom_keys import DICOM_SUFFIXES
from fhir_adapters.imaging.errors import (
    DicomDecodeError,
    TruncatedDicomError,
    UnsupportedImageError,
)
from fhir_adapters.imaging.header import DicomHeader, read_header

__all__ = [
    "DicomImage",
    "DicomSource",
    "ImageReader",
    "PydicomReader",
    "content_hash",
    "decode_pixels",
    "read_dicom_file",
]

DicomSource = bytes | bytearray | memoryview | str | Path | BinaryIO
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, as most viewers use
_TRUNCATION_HINTS = ("less than expected", "truncated", "end of file", "unexpected end")


@dataclass(frozen=True, slots=True)
class DicomImage:
    """A decoded image: ``pixels`` (H, W) float32 in [0, 1] and the header it came with."""

    pixels: npt.NDArray[np.float32]  # (H, W)
    header: DicomHeader
    transfer_syntax: str
    photometric: str


@runtime_checkable
class ImageReader(Protocol):
    """Reads one DICOM object. Raises only ``DicomDecodeError`` (and subclasses)."""

    def verify_suffix(self, filename: str | Path) -> bool:
        """Whether a file name looks like something this reader can read."""
        ...

    def read_header(self, source: DicomSource) -> DicomHeader:
        """Header only; pixel data is not decoded."""
        ...

    def read(self, source: DicomSource) -> DicomImage:
        """Header and the first frame's pixels."""
        ...


def content_hash(data: bytes | bytearray | memoryview) -> str:
    """A stable key for embedding caches when an instance has no SOPInstanceUID."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _looks_like_bare_dataset(head: bytes) -> bool:
    """A DICOM stream without the 128-byte preamble starts with group 0002 or 0008."""
    return len(head) >= 4 and int.from_bytes(head[:2], "little") in (0x0002, 0x0008)


def _parse(stream: BinaryIO, *, stop_before_pixels: bool) -> Dataset:
    try:
        try:
            ds = dcmread(stream, stop_before_pixels=stop_before_pixels)
        except InvalidDicomError:
            stream.seek(0)
            if not _looks_like_bare_dataset(stream.read(4)):
                raise
            stream.seek(0)
            ds = dcmread(stream, stop_before_pixels=stop_before_pixels, force=True)
    except InvalidDicomError as exc:
        raise DicomDecodeError(f"not a DICOM stream: {exc}") from exc
    except EOFError as exc:
        raise TruncatedDicomError(f"DICOM stream ends early: {exc}") from exc
    except Exception as exc:  # pydicom raises many types on garbage; one type leaves here
        raise DicomDecodeError(f"cannot parse DICOM: {type(exc).__name__}: {exc}") from exc
    # pydicom stops quietly when a stream ends between elements, so check what we got.
    at_end = stream.read(1) == b""
    if "Rows" not in ds or "Columns" not in ds:
        if at_end and "SOPInstanceUID" not in ds:  # every complete object has one
            raise TruncatedDicomError("DICOM stream ends early, inside the header")
        raise UnsupportedImageError("DICOM object is not an image (no Rows/Columns)")
    if stop_before_pixels and at_end:
        raise TruncatedDicomError("DICOM stream ends early, before the pixel data")
    if not stop_before_pixels and "PixelData" not in ds and "FloatPixelData" not in ds:
        raise TruncatedDicomError("DICOM stream ends early: image header without pixel data")
    return ds


def _open(source: DicomSource, *, stop_before_pixels: bool) -> Dataset:
    if isinstance(source, bytes | bytearray | memoryview):
        return _parse(io.BytesIO(bytes(source)), stop_before_pixels=stop_before_pixels)
    if isinstance(source, str | Path):
        try:
            with open(source, "rb") as stream:
                return _parse(stream, stop_before_pixels=stop_before_pixels)
        except OSError as exc:
            raise DicomDecodeError(f"cannot open DICOM file: {exc}") from exc
    return _parse(source, stop_before_pixels=stop_before_pixels)


def _voi_output_range(ds: Dataset) -> tuple[float, float]:
    """The range pydicom's ``apply_voi_lut`` maps onto (see ``apply_windowing``)."""
    if ds.get("VOILUTSequence"):
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    if ds.get("ModalityLUTSequence"):
        low, high = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        low, high = 0.0, float(2 ** int(ds.BitsStored) - 1)
    else:
        half = 2 ** (int(ds.BitsStored) - 1)
        low, high = float(-half), float(half - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)
    return min(low, high), max(low, high)


def _has_voi(ds: Dataset) -> bool:
    lut = ds.get("VOILUTSequence")
    if lut and lut[0].get("LUTDescriptor") is not None and lut[0].get("LUTData") is not None:
        return True
    return ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None


def _min_max(arr: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """Stretch to [0, 1]; float32 in place (the hot path for window-less films)."""
    low, high = float(arr.min()), float(arr.max())
    if high <= low:
        return np.zeros(arr.shape, dtype=np.float32)
    out = arr.astype(np.float32)
    out -= np.float32(low)
    out *= np.float32(1.0 / (high - low))
    return out


def decode_pixels(ds: Dataset) -> npt.NDArray[np.float32]:
    """The first frame of ``ds`` as (H, W) float32 in [0, 1] (see the module docstring)."""
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise UnsupportedImageError("DICOM object has no pixel data")
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        if frames > 1:
            ds.pixel_array_options(index=0)
        raw = ds.pixel_array
    except (ValueError, EOFError) as exc:
        if any(h in str(exc).lower() for h in _TRUNCATION_HINTS):
            raise TruncatedDicomError(f"pixel data ends early: {exc}") from exc
        raise DicomDecodeError(f"cannot decode pixel data: {exc}") from exc
    except Exception as exc:  # missing decoder plugin, codec errors, bad attributes
        raise DicomDecodeError(f"cannot decode pixel data: {type(exc).__name__}: {exc}") from exc

    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples == 3 and raw.ndim == 3 and raw.shape[-1] == 3:  # (H, W, 3) colour
        luma: npt.NDArray[np.float64] = raw.astype(np.float64) @ _LUMA  # (H, W)
        top = float(2 ** int(ds.get("BitsStored", 8)) - 1)
        return np.ascontiguousarray(np.clip(luma / top, 0.0, 1.0), dtype=np.float32)
    if raw.ndim != 2:
        raise UnsupportedImageError(f"expected a 2-D frame, got shape {raw.shape}")

    try:
        values = apply_modality_lut(raw, ds)  # (H, W), int unless rescaled
        if _has_voi(ds):
            if ds.get("VOILUTSequence") and values.dtype.kind == "f":
                values = np.rint(values).astype(np.int64)  # a LUT is indexed by integers
            low, high = _voi_output_range(ds)
            windowed = np.asarray(apply_voi_lut(values, ds, index=0), dtype=np.float64)
            if high > low:
                unit = ((windowed - low) / (high - low)).astype(np.float32)
            else:
                unit = _min_max(windowed)
        else:
            unit = _min_max(values)
    except (ValueError, KeyError, AttributeError, IndexError, TypeError) as exc:
        raise DicomDecodeError(f"bad LUT / window attributes: {exc}") from exc

    if photometric == "MONOCHROME1":
        np.subtract(np.float32(1.0), unit, out=unit)
    np.clip(unit, 0.0, 1.0, out=unit)
    return np.ascontiguousarray(unit)


class PydicomReader:
    """``ImageReader`` backed by pydicom (+ pylibjpeg plugins for compressed syntaxes)."""

    def __init__(self, suffixes: Sequence[str] = DICOM_SUFFIXES) -> None:
        self.suffixes = tuple(s.lower() for s in suffixes)

    def verify_suffix(self, filename: str | Path) -> bool:
        """True for ``.dcm``-like names, and for names without a suffix (PACS exports)."""
        return Path(filename).suffix.lower() in self.suffixes

    def read_header(self, source: DicomSource) -> DicomHeader:
        """Header only: identifiers, view position, acquisition time."""
        return read_header(_open(source, stop_before_pixels=True))

    def read(self, source: DicomSource) -> DicomImage:
        """Header and first-frame pixels; ``DicomDecodeError`` on anything unreadable."""
        ds = _open(source, stop_before_pixels=False)
        pixels = decode_pixels(ds)
        syntax = ""
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "TransferSyntaxUID" in meta:
            syntax = str(meta.TransferSyntaxUID)
        return DicomImage(
            pixels=pixels,
            header=read_header(ds),
            transfer_syntax=syntax,
            photometric=str(ds.get("PhotometricInterpretation", "")).upper(),
        )


_DEFAULT_READER = PydicomReader()


def read_dicom_file(source: DicomSource) -> DicomImage:
    """Read one DICOM file (path, bytes or stream) with the default ``PydicomReader``."""
    return _DEFAULT_READER.read(source)
