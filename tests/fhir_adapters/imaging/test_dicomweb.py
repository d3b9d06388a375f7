"""DICOMweb client behaviour that a healthy server never shows: retries, auth, bad bodies.

The server is an ``httpx.MockTransport`` handler serving real DICOM bytes; the real
server round trip is in ``test_orthanc.py``.
"""

from __future__ import annotations

import httpx
import numpy as np
import numpy.typing as npt
import orjson
import pydicom
import pytest

from fhir_adapters.client import RetryPolicy
from fhir_adapters.imaging import DicomWebClient, DicomWebSource, ImageRetrievalError, PydicomReader
from fhir_adapters.imaging.dicomweb import endpoint_address, headers_from_metadata
from fhir_adapters.imaging.multipart import split_multipart
from tests.fhir_adapters.imaging.study_fixtures import STUDY_UID, endpoint, film, imaging_study

BOUNDARY = "DICOMwebBoundary42"
NO_WAIT = RetryPolicy(retries=2, backoff=0.0)


def _multipart(*parts: bytes) -> bytes:
    body = b""
    for part in parts:
        body += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


def _metadata(data: bytes) -> bytes:
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data), stop_before_pixels=True)
    return orjson.dumps([ds.to_json_dict()])


class FakePacs:
    """Answers WADO-RS metadata and instance requests for one DICOM file."""

    def __init__(self, data: bytes, failures: int = 0, status: int = 503) -> None:
        self.data = data
        self.failures = failures
        self.status = status
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.failures > 0:
            self.failures -= 1
            return httpx.Response(self.status, headers={"Retry-After": "0"})
        if request.url.path.endswith("/metadata"):
            return httpx.Response(200, content=_metadata(self.data))
        ctype = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
        return httpx.Response(200, content=_multipart(self.data), headers={"content-type": ctype})


def _source(pacs: FakePacs, **kw: object) -> DicomWebSource:
    return DicomWebSource(
        base_url="https://pacs.example/dicom-web",
        transport=httpx.MockTransport(pacs),
        retry=NO_WAIT,
        **kw,  # type: ignore[arg-type]
    )


def test_retries_on_503_then_loads(nih_pixels: npt.NDArray[np.uint8]) -> None:
    _, data = film(nih_pixels, "PA", 1)
    pacs = FakePacs(data, failures=2)
    refs, notes = _source(pacs).images_for(imaging_study(), [])
    assert notes == [] and len(refs) == 1
    np.testing.assert_array_equal(refs[0].load(), PydicomReader().read(data).pixels)
    assert len(pacs.requests) == 4  # 2 failures + metadata + instance


def test_persistent_server_error_becomes_quality_note(nih_pixels: npt.NDArray[np.uint8]) -> None:
    _, data = film(nih_pixels, "PA", 1)
    refs, notes = _source(FakePacs(data, failures=10)).images_for(imaging_study(), [])
    assert refs == []
    assert [n.reason for n in notes] == [ImageRetrievalError.reason]
    assert "503" in notes[0].detail


def test_bearer_token_is_sent(nih_pixels: npt.NDArray[np.uint8]) -> None:
    _, data = film(nih_pixels, "AP", 1)
    pacs = FakePacs(data)
    refs, _ = _source(pacs, auth="s3cret").images_for(imaging_study(), [])
    refs[0].load()
    assert {r.headers["authorization"] for r in pacs.requests} == {"Bearer s3cret"}
    assert 'type="application/dicom"' in pacs.requests[-1].headers["accept"]


def test_lazy_loader_fetches_only_on_load(nih_pixels: npt.NDArray[np.uint8]) -> None:
    _, data = film(nih_pixels, "AP", 1)
    pacs = FakePacs(data)
    refs, _ = _source(pacs).images_for(imaging_study(), [])
    assert [r.url.path.rsplit("/", 1)[-1] for r in pacs.requests] == ["metadata"]
    refs[0].load()
    assert pacs.requests[-1].url.path.endswith(f"/instances/{STUDY_UID}.1.1")


def test_timeout_becomes_retrieval_error() -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    client = DicomWebClient(
        "https://pacs.example/dicom-web", transport=httpx.MockTransport(hang), retry=NO_WAIT
    )
    with pytest.raises(ImageRetrievalError, match="ReadTimeout"):
        client.study_metadata(STUDY_UID)


def test_non_multipart_answer_is_rejected(nih_pixels: npt.NDArray[np.uint8]) -> None:
    _, data = film(nih_pixels, "AP", 1)

    def plain(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=data, headers={"content-type": "application/dicom"})

    client = DicomWebClient("https://pacs.example/", transport=httpx.MockTransport(plain))
    with pytest.raises(ImageRetrievalError, match="multipart"):
        client.retrieve_instance(STUDY_UID, "1", "2")


def test_multipart_keeps_binary_bytes_exactly() -> None:
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, 40_000, dtype=np.uint8).tobytes() + b"\r\n--Boundary"
    second = b"\r\n\r\n" + rng.integers(0, 256, 999, dtype=np.uint8).tobytes() + b"--"
    body = _multipart(first, second)
    ctype = f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"'
    parts = split_multipart(body, ctype)
    assert [bytes(p.content) for p in parts] == [first, second]
    assert {p.content_type for p in parts} == {"application/dicom"}
    with pytest.raises(ImageRetrievalError, match="closing boundary"):
        split_multipart(body[:-30], ctype)


def test_endpoint_address_resolution() -> None:
    study = imaging_study(endpoint="pacs")
    assert endpoint_address(study, [endpoint("pacs", "https://pacs.example/dw")]) == (
        "https://pacs.example/dw"
    )
    off = endpoint("pacs", "https://pacs.example/dw") | {"status": "off"}
    assert endpoint_address(study, [off]) is None
    assert endpoint_address(study, [endpoint("pacs", "dicom")]) is None  # a folder, not a URL
    contained = imaging_study() | {
        "endpoint": [{"reference": "#ep"}],
        "contained": [endpoint("ep", "http://127.0.0.1:8042/dicom-web")],
    }
    assert endpoint_address(contained, []) == "http://127.0.0.1:8042/dicom-web"


def test_study_without_endpoint_or_uid_is_noted() -> None:
    refs, notes = DicomWebSource().images_for(imaging_study(), [])
    assert refs == [] and "endpoint" in notes[0].detail
    no_uid = imaging_study() | {"identifier": []}
    refs, notes = DicomWebSource(base_url="https://pacs.example/").images_for(no_uid, [])
    assert refs == [] and "StudyInstanceUID" in notes[0].detail


def test_metadata_headers_match_file_headers(nih_pixels: npt.NDArray[np.uint8]) -> None:
    spec, data = film(nih_pixels, "AP", 1, monochrome1=True)
    (header,) = headers_from_metadata(orjson.loads(_metadata(data)))
    assert header == PydicomReader().read_header(data)
    assert header.acquired_at == spec.acquired_at


def test_unknown_study_answered_with_an_empty_list_is_noted() -> None:
    """Some servers answer an unknown study's metadata with 200 [] instead of 404."""
    empty = httpx.MockTransport(lambda request: httpx.Response(200, content=b"[]"))
    source = DicomWebSource(base_url="https://pacs.example/dicom-web", transport=empty)
    refs, notes = source.images_for(imaging_study(), [])
    assert refs == []
    assert [n.reason for n in notes] == [ImageRetrievalError.reason]
    assert STUDY_UID in notes[0].detail
