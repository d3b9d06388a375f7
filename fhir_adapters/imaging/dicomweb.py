"""DICOMweb (PS3.18) over httpx: study metadata (WADO-RS), instance retrieval, and
the ``DicomWebSource`` that turns an ImagingStudy into lazily loaded ImageRefs.

Instances are chosen from the study's metadata (one request, no pixels), so only
the instances the model actually uses are ever downloaded: each ImageRef carries a
``loader`` that retrieves ``multipart/related; type="application/dicom"`` and
decodes it. Bearer token or any ``httpx.Auth``, timeouts, bounded retries with
backoff on 429 / 5xx / transport errors (``fhir_adapters.client.RetryPolicy``).
Every failure leaves as ``ImageRetrievalError``; ``images_for`` turns it into a
QualityNote.

Base URL of the server: the study's ``endpoint`` (an Endpoint resource in
``related`` or ``contained``, ``address`` http(s); series endpoints too), else the
``base_url`` the source was configured with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
import orjson
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from fhir_adapters.client import RETRY_STATUSES, BearerAuth, RetryPolicy
from fhir_adapters.imaging.dicom_keys import (
    DICOM_JSON_MEDIA_TYPE,
    MULTIPART_DICOM_ACCEPT,
    RADIOGRAPH_MODALITIES,
)
from fhir_adapters.imaging.errors import ImageReferenceError, ImageRetrievalError, ImagingError
from fhir_adapters.imaging.header import HEADER_KEYWORDS, DicomHeader, read_header
from fhir_adapters.imaging.multipart import split_multipart
from fhir_adapters.imaging.reader import ImageReader, PydicomReader
from fhir_adapters.imaging.source import (
    ImagesAndNotes,
    Resource,
    frontal_view_notes,
    image_ref,
    lazy_pixels,
    study_label,
    study_uid,
)
from moe_core.records import ImageRef, QualityNote

__all__ = [
    "AsyncDicomWebClient",
    "DicomWebClient",
    "DicomWebSource",
    "endpoint_address",
    "headers_from_metadata",
]

_HEADER_TAGS = frozenset(f"{tag_for_keyword(k):08X}" for k in HEADER_KEYWORDS)
Auth = httpx.Auth | str | None


def _auth(auth: Auth) -> httpx.Auth | None:
    return BearerAuth(auth) if isinstance(auth, str) else auth


def _study_path(study: str, series: str = "", instance: str = "") -> str:
    path = f"studies/{study}"
    if series:
        path += f"/series/{series}"
    if instance:
        path += f"/instances/{instance}"
    return path


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise ImageRetrievalError(
            f"DICOMweb {response.request.method} {response.request.url} -> "
            f"HTTP {response.status_code}"
        )
    return response


def _json_list(response: httpx.Response) -> list[dict[str, Any]]:
    if response.status_code == 204:  # QIDO-RS: no match
        return []
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise ImageRetrievalError(f"DICOMweb answer is not JSON: {exc}") from exc
    if not isinstance(body, list):
        raise ImageRetrievalError("DICOMweb answer is not a JSON array of datasets")
    return [item for item in body if isinstance(item, dict)]


def _dicom_parts(response: httpx.Response) -> list[bytes]:
    parts = split_multipart(response.content, response.headers.get("content-type", ""))
    return [bytes(p.content) for p in parts if p.content]


class DicomWebClient:
    """Synchronous WADO-RS / QIDO-RS client for one DICOMweb base URL."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: Auth = None,
        timeout: float | httpx.Timeout = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.retry = retry or RetryPolicy()
        self.http = httpx.Client(auth=_auth(auth), timeout=timeout, transport=transport)

    def __enter__(self) -> DicomWebClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def get(self, path: str, accept: str) -> httpx.Response:
        """GET ``base_url + path`` with retries; ``ImageRetrievalError`` on failure."""
        url = self.base_url + path
        for attempt in range(self.retry.retries + 1):
            last = attempt == self.retry.retries
            try:
                response = self.http.get(url, headers={"Accept": accept})
            except httpx.TransportError as exc:
                if last:
                    raise ImageRetrievalError(f"DICOMweb GET {url}: {exc!r}") from exc
                time.sleep(self.retry.delay(attempt, None))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                time.sleep(self.retry.delay(attempt, response))
                continue
            return _check(response)
        raise AssertionError("unreachable")  # pragma: no cover

    def study_metadata(self, study: str) -> list[dict[str, Any]]:
        """WADO-RS metadata of every instance in a study (DICOM JSON, no pixels)."""
        return _json_list(self.get(_study_path(study) + "/metadata", DICOM_JSON_MEDIA_TYPE))

    def search_instances(self, study: str) -> list[dict[str, Any]]:
        """QIDO-RS instance search within a study (DICOM JSON)."""
        return _json_list(self.get(_study_path(study) + "/instances", DICOM_JSON_MEDIA_TYPE))

    def retrieve_instance(self, study: str, series: str, instance: str) -> bytes:
        """WADO-RS retrieval of one instance, in its stored transfer syntax."""
        parts = _dicom_parts(self.get(_study_path(study, series, instance), MULTIPART_DICOM_ACCEPT))
        if len(parts) != 1:
            raise ImageRetrievalError(f"expected one DICOM part for {instance}, got {len(parts)}")
        return parts[0]

    def retrieve_study(self, study: str) -> list[bytes]:
        """WADO-RS retrieval of every instance of a study."""
        return _dicom_parts(self.get(_study_path(study), MULTIPART_DICOM_ACCEPT))


class AsyncDicomWebClient:
    """The asynchronous twin of ``DicomWebClient`` (same methods, awaitable)."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: Auth = None,
        timeout: float | httpx.Timeout = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.retry = retry or RetryPolicy()
        self.http = httpx.AsyncClient(auth=_auth(auth), timeout=timeout, transport=transport)

    async def __aenter__(self) -> AsyncDicomWebClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.http.aclose()

    async def get(self, path: str, accept: str) -> httpx.Response:
        """GET ``base_url + path`` with retries; ``ImageRetrievalError`` on failure."""
        url = self.base_url + path
        for attempt in range(self.retry.retries + 1):
            last = attempt == self.retry.retries
            try:
                response = await self.http.get(url, headers={"Accept": accept})
            except httpx.TransportError as exc:
                if last:
                    raise ImageRetrievalError(f"DICOMweb GET {url}: {exc!r}") from exc
                await asyncio.sleep(self.retry.delay(attempt, None))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                await asyncio.sleep(self.retry.delay(attempt, response))
                continue
            return _check(response)
        raise AssertionError("unreachable")  # pragma: no cover

    async def study_metadata(self, study: str) -> list[dict[str, Any]]:
        """WADO-RS metadata of every instance in a study (DICOM JSON, no pixels)."""
        response = await self.get(_study_path(study) + "/metadata", DICOM_JSON_MEDIA_TYPE)
        return _json_list(response)

    async def retrieve_instance(self, study: str, series: str, instance: str) -> bytes:
        """WADO-RS retrieval of one instance, in its stored transfer syntax."""
        response = await self.get(_study_path(study, series, instance), MULTIPART_DICOM_ACCEPT)
        parts = _dicom_parts(response)
        if len(parts) != 1:
            raise ImageRetrievalError(f"expected one DICOM part for {instance}, got {len(parts)}")
        return parts[0]


def _lookup(reference: str, study: Resource, related: Sequence[Resource]) -> Resource | None:
    if reference.startswith("#"):
        for res in study.get("contained") or []:
            if res.get("id") == reference[1:]:
                return res  # type: ignore[no-any-return]
        return None
    wanted = reference.rstrip("/").split("/")[-1]
    for res in related:
        if res.get("resourceType") == "Endpoint" and res.get("id") == wanted:
            return res
    return None


def endpoint_address(study: Resource, related: Sequence[Resource]) -> str | None:
    """The http(s) DICOMweb base URL the study names through ``endpoint``, if any."""
    references = [*(study.get("endpoint") or [])]
    for series in study.get("series") or []:
        references.extend(series.get("endpoint") or [])
    for ref in references:
        endpoint = _lookup(str(ref.get("reference") or ""), study, related)
        if endpoint is None or endpoint.get("status", "active") not in ("active", "test"):
            continue
        address = str(endpoint.get("address") or "")
        if address.startswith(("http://", "https://")):
            return address
    return None


def headers_from_metadata(metadata: Sequence[Mapping[str, Any]]) -> list[DicomHeader]:
    """DicomHeaders from DICOM JSON, trimmed to the attributes the header rules read."""
    headers = []
    for item in metadata:
        trimmed = {tag: value for tag, value in item.items() if tag in _HEADER_TAGS}
        headers.append(read_header(Dataset.from_json(trimmed)))
    return headers


class DicomWebSource:
    """``ImageSource`` over DICOMweb; ImageRefs load their pixels only when asked."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        auth: Auth = None,
        timeout: float | httpx.Timeout = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        reader: ImageReader | None = None,
        lazy: bool = True,
        modalities: frozenset[str] = RADIOGRAPH_MODALITIES,
    ) -> None:
        self.base_url = base_url
        self.reader: ImageReader = reader or PydicomReader()
        self.lazy = lazy
        self.modalities = modalities
        self._make: Callable[[str], DicomWebClient] = lambda url: DicomWebClient(
            url, auth=auth, timeout=timeout, retry=retry, transport=transport
        )
        self._clients: dict[str, DicomWebClient] = {}

    def client(self, base_url: str) -> DicomWebClient:
        """The (cached) client for one server."""
        if base_url not in self._clients:
            self._clients[base_url] = self._make(base_url)
        return self._clients[base_url]

    def close(self) -> None:
        """Close every client (lazy loaders stop working afterwards)."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def images_for(self, study: Resource, related: Sequence[Resource]) -> ImagesAndNotes:
        """ImageRefs for every radiograph instance of the study, from its metadata."""
        label = study_label(study)
        base = endpoint_address(study, related) or self.base_url
        uid = study_uid(study)
        if not base or not uid:
            missing = "DICOMweb endpoint" if not base else "StudyInstanceUID"
            return [], [QualityNote(label, ImageReferenceError.reason, f"no {missing}")]
        client = self.client(base)
        try:
            metadata = client.study_metadata(uid)
        except ImagingError as exc:
            return [], [QualityNote(label, exc.reason, str(exc))]
        if not metadata:
            # Some servers answer an unknown study with 200 and [] instead of 404: the
            # study the record names could not be retrieved either way, so say so.
            detail = f"study {uid} has no instances on the DICOMweb server"
            return [], [QualityNote(label, ImageRetrievalError.reason, detail)]
        headers = headers_from_metadata(metadata)
        refs: list[ImageRef] = []
        notes: list[QualityNote] = []
        for header in headers:
            if header.modality not in self.modalities:
                continue
            made = self._ref(client, header, study)
            if isinstance(made, QualityNote):
                notes.append(made)
            else:
                refs.append(made)
        return refs, [*notes, *frontal_view_notes(study, refs)]

    def _ref(
        self, client: DicomWebClient, header: DicomHeader, study: Resource
    ) -> ImageRef | QualityNote:
        uids = (header.study_uid, header.series_uid, header.sop_uid)

        def fetch() -> bytes:
            return client.retrieve_instance(*uids)

        if self.lazy:
            return image_ref(header, study, loader=lazy_pixels(fetch, self.reader))
        try:
            pixels = self.reader.read(fetch()).pixels
        except ImagingError as exc:
            return QualityNote(study_label(study), exc.reason, f"instance {header.sop_uid}: {exc}")
        return image_ref(header, study, pixels=pixels)
