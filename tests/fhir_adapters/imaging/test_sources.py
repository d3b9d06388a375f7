"""Image sources: attachments, local folders, view selection and quality notes."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch

from fhir_adapters.imaging import (
    AttachmentSource,
    CombinedSource,
    ImageRetrievalError,
    ImageSource,
    LocalFolderSource,
    PydicomReader,
)
from fhir_adapters.imaging.dicom_keys import (
    REASON_NO_FRONTAL_VIEW,
    REASON_NO_TIME,
    REASON_STUDY_MISMATCH,
)
from fhir_adapters.imaging.errors import ImageReferenceError, TruncatedDicomError
from fhir_adapters.imaging.local_folder import wado_path
from fhir_adapters.imaging.synthetic import write_cxr_dicom
from moe_core.features import image_tensor
from moe_core.modalities import Modality
from moe_core.records import ImageRef, PatientRecord
from tests.fhir_adapters.imaging.study_fixtures import (
    STUDY_UID,
    T0,
    document_reference,
    endpoint,
    film,
    imaging_study,
)

READER = PydicomReader()


def _record(images: list[ImageRef]) -> PatientRecord:
    return PatientRecord(
        "p1", "e1", T0 - timedelta(hours=2), T0 + timedelta(hours=46), images=images
    )


def test_sources_satisfy_the_protocol(tmp_path: Path) -> None:
    for source in (AttachmentSource(), LocalFolderSource(tmp_path), CombinedSource([])):
        assert isinstance(source, ImageSource)


def test_lateral_only_study_yields_no_frontal_image(nih_pixels: npt.NDArray[np.uint8]) -> None:
    _, lateral = film(nih_pixels, "LL", 1)
    refs, notes = AttachmentSource().images_for(
        imaging_study(), [document_reference("d1", lateral)]
    )
    assert [r.view_position for r in refs] == ["LL"]
    assert [n.reason for n in notes] == [REASON_NO_FRONTAL_VIEW]
    assert "LL" in notes[0].detail
    record = _record(refs)
    assert record.frontal_image() is None
    assert record.present[Modality.IMAGE] is False


def test_ap_is_preferred_over_pa_and_lateral(nih_pixels: npt.NDArray[np.uint8]) -> None:
    docs = [
        document_reference(f"d{n}", film(nih_pixels, view, n)[1])
        for n, view in enumerate(["PA", "LL", "AP"], start=1)
    ]
    refs, notes = AttachmentSource().images_for(imaging_study(), docs)
    assert notes == []
    chosen = _record(refs).frontal_image()
    assert chosen is not None and chosen.view_position == "AP"
    assert chosen.content_key == f"{STUDY_UID}.3.1"
    assert _record(refs).present[Modality.IMAGE] is True


def test_base64_attachment_is_decoded_lazily(nih_pixels: npt.NDArray[np.uint8]) -> None:
    spec, data = film(nih_pixels, "PA", 1, monochrome1=True)
    refs, _ = AttachmentSource().images_for(imaging_study(), [document_reference("d1", data)])
    (ref,) = refs
    assert ref.pixels is None and ref.loader is not None  # nothing decoded yet
    assert ref.time == spec.acquired_at and ref.study_id == STUDY_UID
    np.testing.assert_array_equal(ref.load(), READER.read(data).pixels)


def test_attachment_url_to_binary_in_bundle(nih_pixels: npt.NDArray[np.uint8]) -> None:
    _, data = film(nih_pixels, "PA", 1)
    binary = {
        "resourceType": "Binary",
        "id": "b1",
        "contentType": "application/dicom",
        "data": base64.b64encode(data).decode(),
    }
    refs, notes = AttachmentSource().images_for(
        imaging_study(), [document_reference("d1", url="Binary/b1"), binary]
    )
    assert notes == [] and len(refs) == 1
    np.testing.assert_array_equal(refs[0].load(), READER.read(data).pixels)


def test_attachment_url_through_resolver(nih_pixels: npt.NDArray[np.uint8]) -> None:
    _, data = film(nih_pixels, "AP", 1)
    asked: list[str] = []

    def resolve(url: str) -> tuple[bytes, str | None]:
        asked.append(url)
        return data, "application/dicom"

    media = {
        "resourceType": "Media",
        "id": "m1",
        "status": "completed",
        "partOf": [{"reference": "https://fhir.example/ImagingStudy/cxr1"}],
        "content": {"contentType": "application/dicom", "url": "https://pacs.example/x.dcm"},
    }
    refs, notes = AttachmentSource(resolve).images_for(imaging_study(), [media])
    assert asked == ["https://pacs.example/x.dcm"]
    assert notes == [] and refs[0].view_position == "AP"


def test_failing_resolver_becomes_quality_note(nih_pixels: npt.NDArray[np.uint8]) -> None:
    def resolve(url: str) -> tuple[bytes, str | None]:
        raise ConnectionError("refused")

    refs, notes = AttachmentSource(resolve).images_for(
        imaging_study(), [document_reference("d1", url="https://pacs.example/x.dcm")]
    )
    assert refs == []
    assert [n.reason for n in notes] == [ImageRetrievalError.reason]


def test_unlinked_or_non_dicom_attachments_are_ignored(nih_pixels: npt.NDArray[np.uint8]) -> None:
    _, data = film(nih_pixels, "PA", 1)
    other_study = document_reference("d1", data, study_id="another")
    pdf = document_reference("d2", b"%PDF-1.4")
    pdf["content"][0]["attachment"]["contentType"] = "application/pdf"
    refs, notes = AttachmentSource().images_for(imaging_study(), [other_study, pdf])
    assert (refs, notes) == ([], [])


def test_truncated_dicom_attachment_becomes_quality_note(
    nih_pixels: npt.NDArray[np.uint8],
) -> None:
    _, good = film(nih_pixels, "AP", 1)
    _, other = film(nih_pixels, "PA", 2)
    docs = [document_reference("d1", good[:200]), document_reference("d2", other)]
    refs, notes = AttachmentSource().images_for(imaging_study(), docs)
    assert [r.view_position for r in refs] == ["PA"]  # the patient keeps the good film
    assert len(notes) == 1 and notes[0].source == "ImagingStudy/cxr1"
    assert notes[0].reason in {TruncatedDicomError.reason, "corrupt DICOM"}


def test_truncated_pixel_data_fails_on_load_not_on_listing(
    nih_pixels: npt.NDArray[np.uint8],
) -> None:
    _, data = film(nih_pixels, "AP", 1)
    refs, _ = AttachmentSource().images_for(
        imaging_study(), [document_reference("d1", data[: len(data) - 1000])]
    )
    with pytest.raises(TruncatedDicomError) as caught:
        refs[0].load()
    assert isinstance(caught.value, ValueError)  # what moe_core.features catches


def test_dicom_from_another_study_is_noted(nih_pixels: npt.NDArray[np.uint8]) -> None:
    _, data = film(nih_pixels, "PA", 1, uid="2.25.999")
    refs, notes = AttachmentSource().images_for(imaging_study(), [document_reference("d1", data)])
    assert refs == [] and [n.reason for n in notes] == [REASON_STUDY_MISMATCH]


def test_time_falls_back_to_study_started(nih_pixels: npt.NDArray[np.uint8]) -> None:
    import pydicom

    _, data = film(nih_pixels, "PA", 1)
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
    for key in (
        "AcquisitionDateTime",
        "AcquisitionDate",
        "AcquisitionTime",
        "StudyDate",
        "StudyTime",
        "SeriesDate",
        "SeriesTime",
    ):
        delattr(ds, key)
    buffer = pydicom.filebase.DicomBytesIO()
    ds.save_as(buffer)
    undated = buffer.getvalue()
    refs, _ = AttachmentSource().images_for(
        imaging_study(started="2024-02-03T10:00:00+02:00"), [document_reference("d1", undated)]
    )
    assert refs[0].time == datetime(2024, 2, 3, 8, 0, tzinfo=UTC)
    refs, notes = AttachmentSource().images_for(
        imaging_study(started=None), [document_reference("d1", undated)]
    )
    assert refs == [] and [n.reason for n in notes] == [REASON_NO_TIME]


def test_local_folder_finds_wado_layout_files(
    tmp_path: Path, nih_pixels: npt.NDArray[np.uint8]
) -> None:
    spec, _ = film(nih_pixels, "AP", 1)
    path = wado_path(tmp_path / "dicom", STUDY_UID, spec.series_uid, spec.sop_uid)
    write_cxr_dicom(path, nih_pixels, spec)
    study = imaging_study(series=[(spec.series_uid, spec.sop_uid)], endpoint="files")
    refs, notes = LocalFolderSource(tmp_path).images_for(study, [endpoint("files", "dicom")])
    assert notes == [] and [r.view_position for r in refs] == ["AP"]
    np.testing.assert_array_equal(refs[0].load(), READER.read(path).pixels)


def test_local_folder_indexes_any_layout(tmp_path: Path, nih_pixels: npt.NDArray[np.uint8]) -> None:
    for n, view in enumerate(["PA", "LL"], start=1):
        spec, _ = film(nih_pixels, view, n)
        write_cxr_dicom(tmp_path / "export" / f"film{n}.dcm", nih_pixels, spec)
    other, _ = film(nih_pixels, "AP", 1, uid="2.25.77")
    write_cxr_dicom(tmp_path / "export" / "other.dcm", nih_pixels, other)
    (tmp_path / "export" / "junk.dcm").write_bytes(b"not dicom")
    source = LocalFolderSource(tmp_path)
    refs, notes = source.images_for(imaging_study(), [])
    assert notes == [] and sorted(r.view_position for r in refs) == ["LL", "PA"]
    refs, notes = source.images_for(imaging_study("2.25.404"), [])
    assert refs == [] and [n.reason for n in notes] == [ImageReferenceError.reason]


def test_combined_source_uses_the_first_that_finds_images(
    tmp_path: Path, nih_pixels: npt.NDArray[np.uint8]
) -> None:
    spec, _ = film(nih_pixels, "PA", 1)
    write_cxr_dicom(tmp_path / "a.dcm", nih_pixels, spec)
    combined = CombinedSource([AttachmentSource(), LocalFolderSource(tmp_path)])
    refs, notes = combined.images_for(imaging_study(), [])
    assert len(refs) == 1 and notes == []


def test_pixels_resize_and_normalise_through_image_tensor(
    nih_pixels: npt.NDArray[np.uint8],
) -> None:
    _, data = film(nih_pixels, "PA", 1, monochrome1=True)
    refs, _ = AttachmentSource().images_for(imaging_study(), [document_reference("d1", data)])
    tensor = image_tensor(refs[0].load())
    assert tuple(tensor.shape) == (3, 224, 224)
    assert tensor.dtype == torch.float32
    # ImageNet normalisation of the [0, 1] grey values: channel means differ by channel.
    _, plain = film(nih_pixels, "PA", 2)
    reference = image_tensor(READER.read(plain).pixels)
    torch.testing.assert_close(tensor, reference, atol=1e-5, rtol=0)
