"""DICOM decoding: codecs, LUTs, MONOCHROME1, frames, truncation, headers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.dataset import Dataset

from fhir_adapters.imaging import (
    DicomDecodeError,
    PydicomReader,
    TruncatedDicomError,
    UnsupportedImageError,
    read_header,
)
from fhir_adapters.imaging.dicom_keys import VIEW_UNKNOWN
from fhir_adapters.imaging.synthetic import (
    CxrDicomSpec,
    Encoding,
    build_cxr_dataset,
    cxr_dicom_bytes,
)

READER = PydicomReader()


def _unit(px: npt.NDArray[np.integer]) -> npt.NDArray[np.float64]:
    """Min-max of the original pixels: what a window-less decode must give."""
    arr = px.astype(np.float64)
    unit: npt.NDArray[np.float64] = (arr - arr.min()) / (arr.max() - arr.min())
    return unit


def test_real_cr_film_is_read_with_header(pydicom_data: Path) -> None:
    path = pydicom_data / "RG1_UNCR.dcm"
    ds = pydicom.dcmread(path)
    image = READER.read(path)
    assert image.pixels.dtype == np.float32
    assert image.pixels.shape == (ds.Rows, ds.Columns)
    assert 0.0 <= float(image.pixels.min()) < float(image.pixels.max()) <= 1.0
    assert image.photometric == "MONOCHROME1"
    assert image.header.view_position == "PA"
    assert image.header.study_uid == ds.StudyInstanceUID
    assert image.header.sop_uid == ds.SOPInstanceUID
    assert image.header.acquired_at is not None
    assert image.header.acquired_at.tzinfo is UTC


def test_real_cr_film_monochrome1_window_matches_formula(pydicom_data: Path) -> None:
    """RG1 is MONOCHROME1 with a linear window: check against PS3.3 C.11.2.1.2 by hand."""
    ds = pydicom.dcmread(pydicom_data / "RG1_UNCR.dcm")
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    x = ds.pixel_array.astype(np.float64)
    windowed = np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
    expected = 1.0 - windowed  # MONOCHROME1: low stored values are bright
    got = READER.read(pydicom_data / "RG1_UNCR.dcm").pixels
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_jpeg2000_lossless_real_film_equals_uncompressed(pydicom_data: Path) -> None:
    plain = READER.read(pydicom_data / "RG1_UNCR.dcm").pixels
    j2k = READER.read(pydicom_data / "RG1_J2KR.dcm")
    assert j2k.transfer_syntax == pydicom.uid.JPEG2000Lossless
    np.testing.assert_array_equal(j2k.pixels, plain)


def test_jpeg2000_lossy_real_film_close_to_uncompressed(pydicom_data: Path) -> None:
    plain = READER.read(pydicom_data / "RG1_UNCR.dcm").pixels
    lossy = READER.read(pydicom_data / "RG1_J2KI.dcm")
    assert lossy.transfer_syntax == pydicom.uid.JPEG2000
    error = np.abs(lossy.pixels - plain)
    assert float(error.mean()) < 0.005
    assert float(error.max()) < 0.05


@pytest.mark.parametrize(
    ("encoding", "max_error", "mean_error"),
    [
        (Encoding.NATIVE, 0.0, 0.0),
        (Encoding.RLE, 0.0, 0.0),
        (Encoding.JPEG2000_LOSSLESS, 0.0, 0.0),
        (Encoding.JPEG_BASELINE, 0.08, 0.01),  # quality 95: a few grey levels
        (Encoding.JPEG2000, 0.08, 0.01),  # ratio 10: under 3 grey levels on average
    ],
)
@pytest.mark.parametrize("monochrome1", [False, True])
def test_nih_radiograph_decodes_like_original(
    nih_pixels: npt.NDArray[np.uint8],
    encoding: Encoding,
    max_error: float,
    mean_error: float,
    monochrome1: bool,
) -> None:
    data = cxr_dicom_bytes(nih_pixels, CxrDicomSpec(encoding=encoding, monochrome1=monochrome1))
    got = READER.read(data).pixels
    error = np.abs(got.astype(np.float64) - _unit(nih_pixels))
    assert got.shape == nih_pixels.shape
    assert float(error.max()) <= max_error + 1e-6
    assert float(error.mean()) <= mean_error + 1e-7


def test_monochrome1_is_inverted(nih_pixels: npt.NDArray[np.uint8]) -> None:
    stored_inverted = cxr_dicom_bytes(nih_pixels, CxrDicomSpec(monochrome1=True))
    raw = pydicom.dcmread(pydicom.filebase.DicomBytesIO(stored_inverted)).pixel_array
    np.testing.assert_array_equal(raw, 255 - nih_pixels)  # the file really stores it inverted
    got = READER.read(stored_inverted).pixels
    np.testing.assert_allclose(got, _unit(nih_pixels), atol=1e-6)  # bright = dense again
    plain = READER.read(cxr_dicom_bytes(nih_pixels, CxrDicomSpec())).pixels
    assert float(np.corrcoef(got.ravel(), plain.ravel())[0, 1]) > 0.999


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_dicom_raises_truncated_error(
    nih_pixels: npt.NDArray[np.uint8], keep: float
) -> None:
    data = cxr_dicom_bytes(nih_pixels, CxrDicomSpec())
    with pytest.raises(TruncatedDicomError, match="ends early"):
        READER.read(data[: int(len(data) * keep)])


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter")
def test_truncated_jpeg2000_raises_decode_error(pydicom_data: Path) -> None:
    data = (pydicom_data / "RG1_J2KR.dcm").read_bytes()
    with pytest.raises(DicomDecodeError):
        READER.read(data[: len(data) // 2])


def test_header_cut_short_raises_decode_error(nih_pixels: npt.NDArray[np.uint8]) -> None:
    data = cxr_dicom_bytes(nih_pixels, CxrDicomSpec())
    with pytest.raises(DicomDecodeError):
        READER.read(data[:300])


def test_non_dicom_bytes_raise_decode_error() -> None:
    with pytest.raises(DicomDecodeError):
        READER.read(b"%PDF-1.4 this is not a DICOM file" * 10)


def test_voi_window_is_applied() -> None:
    ramp = np.arange(4096, dtype=np.uint16).reshape(64, 64)  # 12-bit range
    spec = CxrDicomSpec(window=(2048.0, 1024.0))
    got = READER.read(cxr_dicom_bytes(ramp, spec)).pixels.astype(np.float64)
    x = ramp.astype(np.float64)
    expected = np.clip((x - 2047.5) / 1023.0 + 0.5, 0.0, 1.0)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert float(got[0, 0]) == 0.0 and float(got[-1, -1]) == 1.0  # clipped outside window


def test_rescale_is_applied_before_window() -> None:
    ramp = np.arange(4096, dtype=np.uint16).reshape(64, 64)
    # Window given in rescaled units (HU-like): slope 2, intercept -1000.
    spec = CxrDicomSpec(window=(0.0, 2000.0), rescale=(2.0, -1000.0))
    got = READER.read(cxr_dicom_bytes(ramp, spec)).pixels.astype(np.float64)
    y = ramp.astype(np.float64) * 2.0 - 1000.0
    expected = np.clip((y - (0.0 - 0.5)) / (2000.0 - 1) + 0.5, 0.0, 1.0)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_voi_lut_sequence_is_applied() -> None:
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    ds = build_cxr_dataset(ramp, CxrDicomSpec())
    table = (255 - np.arange(256)).astype(np.uint16)  # an inverting 8-bit LUT
    item = Dataset()
    item.LUTDescriptor = [256, 0, 8]
    item.add_new(0x00283006, "US", table.tolist())  # LUTData, US (not OW) VR
    ds.VOILUTSequence = [item]
    got = READER.read(_save(ds)).pixels
    np.testing.assert_allclose(got, table[ramp] / 255.0, atol=1e-6)


def test_no_window_falls_back_to_min_max() -> None:
    flat = np.full((8, 8), 700, dtype=np.uint16)
    flat[0, 0], flat[7, 7] = 600, 900
    got = READER.read(cxr_dicom_bytes(flat, CxrDicomSpec())).pixels
    assert float(got.min()) == 0.0 and float(got.max()) == 1.0
    assert got[1, 1] == pytest.approx(100 / 300)


def test_multi_frame_uses_first_frame(nih_pixels: npt.NDArray[np.uint8]) -> None:
    first = nih_pixels[:128, :128].copy()
    second = 255 - first
    ds = build_cxr_dataset(first, CxrDicomSpec())
    ds.NumberOfFrames = 2
    ds.PixelData = first.tobytes() + second.tobytes()
    got = READER.read(_save(ds))
    np.testing.assert_allclose(got.pixels, _unit(first), atol=1e-6)
    assert got.header.frames == 2


def test_image_header_without_pixel_data_is_truncated(nih_pixels: npt.NDArray[np.uint8]) -> None:
    ds = build_cxr_dataset(nih_pixels, CxrDicomSpec())
    del ds.PixelData
    with pytest.raises(TruncatedDicomError):
        READER.read(_save(ds))


def test_non_image_dicom_is_unsupported(nih_pixels: npt.NDArray[np.uint8]) -> None:
    ds = build_cxr_dataset(nih_pixels, CxrDicomSpec())
    for key in ("PixelData", "Rows", "Columns"):
        delattr(ds, key)
    ds.ContentSequence = []  # a structured report, say: no image module
    with pytest.raises(UnsupportedImageError):
        READER.read(_save(ds))
    with pytest.raises(UnsupportedImageError):
        READER.read_header(_save(ds) + b"\x00" * 0)


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")  # lower case on purpose
@pytest.mark.parametrize(
    ("attributes", "view"),
    [
        ({"ViewPosition": "ap"}, "AP"),
        ({"ViewPosition": " pa "}, "PA"),
        ({"SeriesDescription": "CHEST LAT"}, "LATERAL"),
        ({"ProtocolName": "Thorax PA upright"}, "PA"),
        ({"SeriesDescription": "CHEST PORTABLE"}, VIEW_UNKNOWN),
        ({"ImageLaterality": "L"}, VIEW_UNKNOWN),  # body side, not a projection
    ],
)
def test_view_position_fallbacks(attributes: dict[str, str], view: str) -> None:
    ds = Dataset()
    for key, value in attributes.items():
        setattr(ds, key, value)
    assert read_header(ds).view_position == view


def test_view_code_sequence_names_the_view() -> None:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "399348003", "SCT"
    code.CodeMeaning = "antero-posterior"
    ds = Dataset()
    ds.ViewCodeSequence = [code]
    header = read_header(ds)
    assert (header.view_position, header.view_source) == ("AP", "ViewCodeSequence")


def test_date_without_time_is_end_of_day() -> None:
    ds = Dataset()
    ds.StudyDate = "20240305"
    assert read_header(ds).acquired_at == datetime(2024, 3, 5, 23, 59, 59, 999999, tzinfo=UTC)


def test_timezone_offset_is_honoured() -> None:
    ds = Dataset()
    ds.AcquisitionDate, ds.AcquisitionTime = "20240305", "083000"
    ds.TimezoneOffsetFromUTC = "-0500"
    assert read_header(ds).acquired_at == datetime(2024, 3, 5, 13, 30, tzinfo=UTC)


def test_acquisition_datetime_wins_over_study_date() -> None:
    ds = Dataset()
    ds.StudyDate, ds.StudyTime = "20240101", "000000"
    ds.AcquisitionDateTime = "20240102103000+0100"
    got = read_header(ds).acquired_at
    assert got == datetime(2024, 1, 2, 9, 30, tzinfo=UTC)
    assert got is not None and got.utcoffset() == timedelta(0)


def test_jpeg_lossless_real_file_decodes(pydicom_data: Path) -> None:
    path = pydicom_data / "JPGLosslessP14SV1_1s_1f_8b.dcm"
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    got = READER.read(path)
    assert got.transfer_syntax == pydicom.uid.JPEGLosslessSV1
    assert got.pixels.shape == (ds.Rows, ds.Columns)
    assert float(got.pixels.std()) > 0.01  # a real picture, not a blank frame


def _save(ds: Dataset) -> bytes:
    buffer = pydicom.filebase.DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
