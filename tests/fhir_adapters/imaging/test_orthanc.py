"""Integration: chest X-ray DICOMs uploaded to a real Orthanc, read back over DICOMweb."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import pydicom
import pytest

from fhir_adapters.imaging import (
    AsyncDicomWebClient,
    DicomWebClient,
    DicomWebSource,
    PydicomReader,
)
from fhir_adapters.imaging.dicom_keys import REASON_NO_FRONTAL_VIEW
from fhir_adapters.imaging.errors import ImageRetrievalError
from fhir_adapters.imaging.synthetic import CxrDicomSpec, Encoding, load_png, write_cxr_dicom
from tests.fhir_adapters.imaging.study_fixtures import endpoint, imaging_study

pytestmark = pytest.mark.integration
READER = PydicomReader()
# (view, encoding, MONOCHROME1) for the NIH films of one study.
FILMS = [
    ("AP", Encoding.JPEG2000_LOSSLESS, False),
    ("PA", Encoding.JPEG_BASELINE, True),
    ("LL", Encoding.NATIVE, False),
    ("PA", Encoding.JPEG2000, False),
    ("AP", Encoding.RLE, True),
]


def _upload(base: str, path: Path) -> None:
    response = httpx.post(f"{base}/instances", content=path.read_bytes(), timeout=30)
    assert response.status_code == 200, response.text


def _nih_study(tmp_path: Path, nih_pngs: list[Path], uid: str) -> list[Path]:
    paths = []
    for n, (view, encoding, mono1) in enumerate(FILMS, start=1):
        pixels = load_png(nih_pngs[n])
        spec = CxrDicomSpec(
            view_position=view,
            encoding=encoding,
            monochrome1=mono1,
            modality="CR",
            study_uid=uid,
            series_uid=f"{uid}.{n}",
            sop_uid=f"{uid}.{n}.1",
        )
        paths.append(write_cxr_dicom(tmp_path / "files" / f"{n}.dcm", pixels, spec))
    return paths


def test_wado_rs_pixels_equal_file_pixels(
    orthanc: str,
    tmp_path: Path,
    nih_pngs: list[Path],
    pydicom_data: Path,
) -> None:
    uid = "2.25.424242"
    paths = _nih_study(tmp_path, nih_pngs, uid)
    real_film = pydicom_data / "RG1_J2KR.dcm"
    for path in [*paths, real_film]:
        _upload(orthanc, path)
    dicomweb = f"{orthanc}/dicom-web/"
    study = imaging_study(uid, endpoint="pacs")
    source = DicomWebSource()
    refs, notes = source.images_for(study, [endpoint("pacs", dicomweb)])
    assert notes == []
    by_sop = {r.content_key: r for r in refs}
    assert set(by_sop) == {f"{uid}.{n}.1" for n in range(1, len(FILMS) + 1)}
    for n, path in enumerate(paths, start=1):
        ref = by_sop[f"{uid}.{n}.1"]
        assert ref.pixels is None  # lazy: nothing fetched yet
        assert ref.view_position == FILMS[n - 1][0]
        np.testing.assert_array_equal(ref.load(), READER.read(path).pixels)
    source.close()

    # The real CR film (JPEG 2000, MONOCHROME1) travels through WADO-RS unchanged.
    ds = pydicom.dcmread(real_film, stop_before_pixels=True)
    with DicomWebClient(dicomweb) as client:
        data = client.retrieve_instance(
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
        )
        np.testing.assert_array_equal(READER.read(data).pixels, READER.read(real_film).pixels)
        assert len(client.retrieve_study(uid)) == len(FILMS)
        assert len(client.search_instances(uid)) == len(FILMS)


def test_eager_source_and_lateral_only_study(
    orthanc: str,
    tmp_path: Path,
    nih_pngs: list[Path],
) -> None:
    uid = "2.25.515151"
    spec = CxrDicomSpec(
        view_position="LL", study_uid=uid, series_uid=f"{uid}.1", sop_uid=f"{uid}.1.1"
    )
    path = write_cxr_dicom(tmp_path / "ll.dcm", load_png(nih_pngs[0]), spec)
    _upload(orthanc, path)
    source = DicomWebSource(base_url=f"{orthanc}/dicom-web", lazy=False)
    refs, notes = source.images_for(imaging_study(uid), [])
    source.close()
    assert [r.view_position for r in refs] == ["LL"]
    assert refs[0].pixels is not None
    np.testing.assert_array_equal(refs[0].pixels, READER.read(path).pixels)
    assert [n.reason for n in notes] == [REASON_NO_FRONTAL_VIEW]


def test_unknown_study_and_missing_instance(orthanc: str) -> None:
    source = DicomWebSource(base_url=f"{orthanc}/dicom-web")
    refs, notes = source.images_for(imaging_study("2.25.1"), [])
    source.close()
    assert refs == []
    # Whether Orthanc answers 404 or an empty list, the study is reported as not retrieved.
    assert [n.reason for n in notes] == [ImageRetrievalError.reason]
    assert "2.25.1" in notes[0].detail
    with (
        DicomWebClient(f"{orthanc}/dicom-web") as client,
        pytest.raises(ImageRetrievalError),
    ):
        client.retrieve_instance("2.25.1", "2.25.2", "2.25.3")


async def _async_fetch(base: str, study: str, series: str, sop: str) -> bytes:
    async with AsyncDicomWebClient(base) as client:
        meta = await client.study_metadata(study)
        assert len(meta) == 1
        return await client.retrieve_instance(study, series, sop)


def test_async_client_retrieves_same_bytes(
    orthanc: str,
    tmp_path: Path,
    nih_pixels: npt.NDArray[np.uint8],
) -> None:
    import asyncio

    uid = "2.25.626262"
    spec = CxrDicomSpec(
        study_uid=uid,
        series_uid=f"{uid}.1",
        sop_uid=f"{uid}.1.1",
        encoding=Encoding.JPEG2000_LOSSLESS,
    )
    path = write_cxr_dicom(tmp_path / "a.dcm", nih_pixels, spec)
    _upload(orthanc, path)
    data = asyncio.run(_async_fetch(f"{orthanc}/dicom-web", uid, spec.series_uid, spec.sop_uid))
    assert data == path.read_bytes()
