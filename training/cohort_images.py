"""Lazy image loaders for cohort folders: a file path in, [0, 1] float32 pixels out.

Cohorts store images as references (a DICOM, JPEG/PNG or ``.npy`` file); the pixels
are decoded only when a model or an embedding cache asks for them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["FileImageLoader", "load_image_file"]

_DICOM_SUFFIXES = (".dcm", ".dicom")
_ARRAY_SUFFIX = ".npy"
_ARCHIVE_SUFFIX = ".npz"  # np.savez_compressed with one array named "pixels"


def _to_unit_range(arr: npt.NDArray[Any], max_value: float) -> npt.NDArray[np.float32]:
    out: npt.NDArray[np.float32] = np.clip(arr.astype(np.float32) / np.float32(max_value), 0, 1)
    return out.astype(np.float32)


def _load_raster(path: Path) -> npt.NDArray[np.float32]:
    from PIL import Image

    with Image.open(path) as img:
        if img.mode in {"I;16", "I;16B", "I;16L", "I"}:
            arr = np.asarray(img, dtype=np.float64)
            top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
            return _to_unit_range(arr, top)
        return _to_unit_range(np.asarray(img.convert("L")), 255.0)


def _load_dicom(path: Path) -> npt.NDArray[np.float32]:
    """Decode with the project's DICOM reader when present, else plain pydicom."""
    try:
        decoder = importlib.import_module("fhir_adapters.imaging")
    except ModuleNotFoundError:
        decoder = None
    for name in ("decode_dicom_file", "read_dicom_file", "load_dicom"):
        fn = getattr(decoder, name, None) if decoder is not None else None
        if callable(fn):
            result = fn(path)
            pixels = getattr(result, "pixels", result)
            return np.asarray(pixels, dtype=np.float32)
    import pydicom
    from pydicom.pixels.processing import apply_voi_lut

    ds = pydicom.dcmread(path)
    arr = apply_voi_lut(ds.pixel_array, ds).astype(np.float64)
    if arr.ndim == 3:  # multi-frame or colour: first frame / luminance
        arr = arr[0] if arr.shape[-1] not in (3, 4) else arr[..., :3].mean(axis=-1)
    lo, hi = float(arr.min()), float(arr.max())
    out = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    if str(getattr(ds, "PhotometricInterpretation", "")) == "MONOCHROME1":
        out = 1.0 - out
    return out.astype(np.float32)


def load_image_file(path: Path) -> npt.NDArray[np.float32]:
    """A 2-D float32 array in [0, 1] from a DICOM, raster (JPEG/PNG), ``.npy`` or ``.npz`` file."""
    suffix = path.suffix.lower()
    if suffix == _ARRAY_SUFFIX:
        return np.asarray(np.load(path), dtype=np.float32)
    if suffix == _ARCHIVE_SUFFIX:
        with np.load(path) as archive:
            return np.asarray(archive["pixels"], dtype=np.float32)
    if suffix in _DICOM_SUFFIXES:
        return _load_dicom(path)
    return _load_raster(path)


@dataclass(frozen=True, slots=True)
class FileImageLoader:
    """A picklable ``ImageRef.loader`` that decodes one file on demand."""

    path: Path

    def __call__(self) -> npt.NDArray[np.float32]:
        if not self.path.is_file():
            raise FileNotFoundError(f"image file not found: {self.path}")
        return load_image_file(self.path)
