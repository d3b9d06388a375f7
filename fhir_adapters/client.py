"""FHIR R4 REST client on httpx, sync (``FhirClient``) and async (``AsyncFhirClient``).

Read, search with paging (``link[relation=next]``, bounded by ``max_pages``), a
transaction POST, Binary fetches for notes; bearer token or any ``httpx.Auth`` (e.g.
``fhir_adapters.smart_auth.SmartBackendAuth``); timeouts; retries with exponential
backoff, honouring ``Retry-After``. Idempotent methods (GET, HEAD, PUT, DELETE, ...)
are retried on 429 / 5xx / any transport error. POST and PATCH are not idempotent: a
5xx or a read timeout may come after the server applied the request, and repeating a
transaction Bundle could create its resources twice. They are retried only on 429
(the server refused before doing anything) and on connection errors (the request was
never sent). The transport is
injected, so unit tests pass ``httpx.MockTransport`` and integration tests a real server.

Errors::

    FhirClientError                   base of everything raised here and in bulk.py
    ├── FhirTransportError            connection failed / timed out (after retries)
    ├── FhirResponseError             the body is not the FHIR JSON that was expected
    ├── FhirPageLimitError            search needed more than ``max_pages`` pages
    ├── FhirHTTPError                 a 4xx/5xx answer; ``.status``, ``.outcome``
    │   ├── FhirAuthError             401 / 403
    │   ├── FhirNotFoundError         404 / 410
    │   ├── FhirRateLimitError        429 after all retries
    │   └── FhirServerError           5xx after all retries
    ├── AuthTokenError                SMART token endpoint refused or failed (smart_auth.py)
    └── BulkExportError               Bulk Data export failed (bulk.py)
        ├── BulkKickoffError          $export was not accepted (no 202 + Content-Location)
        ├── BulkJobError              the status endpoint reported an error
        └── BulkTimeoutError          the job did not finish within the time allowed
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin

import httpx
import orjson

__all__ = [
    "AsyncFhirClient",
    "AuthTokenError",
    "BearerAuth",
    "BulkExportError",
    "BulkJobError",
    "BulkKickoffError",
    "BulkTimeoutError",
    "FhirAuthError",
    "FhirClient",
    "FhirClientError",
    "FhirHTTPError",
    "FhirNotFoundError",
    "FhirPageLimitError",
    "FhirRateLimitError",
    "FhirResponseError",
    "FhirServerError",
    "FhirTransportError",
    "RetryPolicy",
    "bundle_resources",
    "next_link",
    "retryable_error",
    "retryable_status",
]

FHIR_JSON = "application/fhir+json"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
NON_IDEMPOTENT_METHODS = frozenset({"POST", "PATCH"})
# Raised before any byte of the request left: safe to retry whatever the method.
_NOT_SENT_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)


class FhirClientError(Exception):
    """Base class of the client errors (see the tree in the module docstring)."""


class FhirTransportError(FhirClientError):
    """The server could not be reached or did not answer in time."""


class FhirResponseError(FhirClientError):
    """The answer was not the JSON resource / Bundle expected."""


class FhirPageLimitError(FhirClientError):
    """A search had more pages than allowed."""


class FhirHTTPError(FhirClientError):
    """An HTTP error answer; ``outcome`` is the OperationOutcome when one was sent."""

    def __init__(self, status: int, url: str, outcome: Mapping[str, Any] | None = None) -> None:
        diag = ""
        if outcome:
            issues = outcome.get("issue") or []
            diag = "; ".join(str(i.get("diagnostics") or i.get("code")) for i in issues if i)
        super().__init__(f"HTTP {status} for {url}" + (f": {diag}" if diag else ""))
        self.status = status
        self.url = url
        self.outcome = outcome


class FhirAuthError(FhirHTTPError):
    """401 / 403."""


class FhirNotFoundError(FhirHTTPError):
    """404 / 410."""


class FhirRateLimitError(FhirHTTPError):
    """429 after all retries."""


class FhirServerError(FhirHTTPError):
    """5xx after all retries."""


class AuthTokenError(FhirClientError):
    """The SMART token endpoint refused the client or answered garbage."""


class BulkExportError(FhirClientError):
    """A Bulk Data export failed."""


class BulkKickoffError(BulkExportError):
    """``$export`` was not accepted."""


class BulkJobError(BulkExportError):
    """The export job reported an error."""


class BulkTimeoutError(BulkExportError):
    """The export job did not complete in time."""


class RetryPolicy:
    """How many retries, and how long to wait before each (Retry-After wins when given)."""

    def __init__(self, retries: int = 3, backoff: float = 0.5, max_delay: float = 30.0) -> None:
        if retries < 0 or backoff < 0 or max_delay < 0:
            raise ValueError(f"retry settings must be >= 0: {retries=}, {backoff=}, {max_delay=}")
        self.retries = retries
        self.backoff = backoff
        self.max_delay = max_delay

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        if response is not None:
            after = retry_after_seconds(response)
            if after is not None:
                return min(after, self.max_delay)
        return float(min(self.backoff * (2**attempt), self.max_delay))


def retry_after_seconds(response: httpx.Response) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); ``None`` if absent/bad."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def retryable_status(method: str, status: int) -> bool:
    """Whether an answer with ``status`` may be retried for ``method`` (see module doc)."""
    if method.upper() in NON_IDEMPOTENT_METHODS:
        return status == 429
    return status in RETRY_STATUSES


def retryable_error(method: str, exc: httpx.TransportError) -> bool:
    """Whether a transport error may be retried for ``method`` (see module doc)."""
    return method.upper() not in NON_IDEMPOTENT_METHODS or isinstance(exc, _NOT_SENT_ERRORS)


def _error_for(response: httpx.Response) -> FhirHTTPError:
    outcome: Mapping[str, Any] | None = None
    try:
        body = orjson.loads(response.content)
        if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
            outcome = body
    except orjson.JSONDecodeError:
        pass
    status, url = response.status_code, str(response.request.url)
    cls: type[FhirHTTPError] = FhirHTTPError
    if status in (401, 403):
        cls = FhirAuthError
    elif status in (404, 410):
        cls = FhirNotFoundError
    elif status == 429:
        cls = FhirRateLimitError
    elif status >= 500:
        cls = FhirServerError
    return cls(status, url, outcome)


def json_body(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a successful answer; ``FhirResponseError`` otherwise."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise FhirResponseError(f"not JSON from {response.request.url}: {exc}") from exc
    if not isinstance(body, dict):
        raise FhirResponseError(f"expected a JSON object from {response.request.url}")
    return body


def next_link(bundle: Mapping[str, Any]) -> str | None:
    """The ``next`` page URL of a searchset Bundle."""
    for link in bundle.get("link") or ():
        if isinstance(link, Mapping) and link.get("relation") == "next" and link.get("url"):
            return str(link["url"])
    return None


def bundle_resources(bundle: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The resources of a Bundle's entries (OperationOutcome ``outcome`` entries skipped)."""
    out = []
    for entry in bundle.get("entry") or ():
        res = entry.get("resource") if isinstance(entry, Mapping) else None
        mode = (entry.get("search") or {}).get("mode") if isinstance(entry, Mapping) else None
        if isinstance(res, dict) and mode != "outcome":
            out.append(res)
    return out


def _binary_content(response: httpx.Response) -> tuple[bytes, str | None]:
    """Bytes of a Binary: a FHIR Binary JSON (``data`` base64) or the raw content."""
    ctype = response.headers.get("content-type", "")
    if "json" in ctype:
        body = json_body(response)
        if body.get("resourceType") == "Binary":
            data = body.get("data")
            return (base64.b64decode(data) if isinstance(data, str) else b""), body.get(
                "contentType"
            )
    return response.content, ctype or None


class BearerAuth(httpx.Auth):
    """A static bearer token."""

    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


def _auth(auth: httpx.Auth | str | None) -> httpx.Auth | None:
    return BearerAuth(auth) if isinstance(auth, str) else auth


class _Base:
    def __init__(self, base_url: str, retry: RetryPolicy | None, max_pages: int) -> None:
        if max_pages < 1:
            raise ValueError(f"max_pages must be >= 1, got {max_pages}")
        self.base_url = base_url.rstrip("/") + "/"
        self.retry = retry or RetryPolicy()
        self.max_pages = max_pages

    def url(self, path: str) -> str:
        return urljoin(self.base_url, path)

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            raise _error_for(response)
        return response


class FhirClient(_Base):
    """Synchronous FHIR client. Use as a context manager or call ``close()``."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        max_pages: int = 100,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(base_url, retry, max_pages)
        self._sleep = sleep
        self.http = httpx.Client(
            auth=_auth(auth),
            timeout=timeout,
            transport=transport,
            headers={"Accept": FHIR_JSON},
            follow_redirects=True,
        )

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One request with retries; raises a ``FhirClientError`` subclass on failure."""
        url = self.url(path)
        for attempt in range(self.retry.retries + 1):
            last = attempt == self.retry.retries
            try:
                response = self.http.request(method, url, **kw)
            except httpx.TransportError as exc:
                if last or not retryable_error(method, exc):
                    raise FhirTransportError(f"{method} {url}: {exc!r}") from exc
                self._sleep(self.retry.delay(attempt, None))
                continue
            if not last and retryable_status(method, response.status_code):
                self._sleep(self.retry.delay(attempt, response))
                continue
            return self._check(response)
        raise AssertionError("unreachable")  # pragma: no cover

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """``GET [base]/Type/id``."""
        return json_body(self.request("GET", f"{resource_type}/{resource_id}"))

    def search_pages(
        self, resource_type: str, params: Mapping[str, str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every page (Bundle) of a search, following ``next`` links, at most ``max_pages``."""
        bundle = json_body(self.request("GET", resource_type, params=dict(params or {})))
        pages = 1
        yield bundle
        while (link := next_link(bundle)) is not None:
            if pages >= self.max_pages:
                raise FhirPageLimitError(f"search {resource_type} exceeded {self.max_pages} pages")
            bundle = json_body(self.request("GET", link))
            pages += 1
            yield bundle

    def search(
        self, resource_type: str, params: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """All resources a search returns, across pages."""
        return [
            r for page in self.search_pages(resource_type, params) for r in bundle_resources(page)
        ]

    def patient_resources(
        self, patient_id: str, types: tuple[str, ...] = ("Encounter", "Observation",
                                                        "DocumentReference", "DiagnosticReport",
                                                        "ImagingStudy")
    ) -> list[dict[str, Any]]:  # fmt: skip
        """The Patient and its resources of ``types`` (searched with ``patient=<id>``)."""
        out = [self.read("Patient", patient_id)]
        for rtype in types:
            out.extend(self.search(rtype, {"patient": patient_id, "_count": "200"}))
        return out

    def transaction(self, bundle: Mapping[str, Any]) -> dict[str, Any]:
        """POST a transaction/batch Bundle to the base; returns the response Bundle."""
        body = orjson.dumps(bundle)
        headers = {"Content-Type": FHIR_JSON}
        return json_body(self.request("POST", "", content=body, headers=headers))

    def binary(self, url: str) -> tuple[bytes, str | None]:
        """Fetch an attachment URL (``Binary/123`` or absolute): ``(bytes, contentType)``.

        Usable directly as ``build_records(binary_resolver=client.binary)``.
        """
        return _binary_content(self.request("GET", url, headers={"Accept": "*/*"}))


class AsyncFhirClient(_Base):
    """Asynchronous twin of ``FhirClient`` (same arguments, ``await`` the methods)."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        max_pages: int = 100,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        super().__init__(base_url, retry, max_pages)
        self._sleep = sleep
        self.http = httpx.AsyncClient(
            auth=_auth(auth),
            timeout=timeout,
            transport=transport,
            headers={"Accept": FHIR_JSON},
            follow_redirects=True,
        )

    async def __aenter__(self) -> AsyncFhirClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One request with retries; raises a ``FhirClientError`` subclass on failure."""
        url = self.url(path)
        for attempt in range(self.retry.retries + 1):
            last = attempt == self.retry.retries
            try:
                response = await self.http.request(method, url, **kw)
            except httpx.TransportError as exc:
                if last or not retryable_error(method, exc):
                    raise FhirTransportError(f"{method} {url}: {exc!r}") from exc
                await self._sleep(self.retry.delay(attempt, None))
                continue
            if not last and retryable_status(method, response.status_code):
                await self._sleep(self.retry.delay(attempt, response))
                continue
            return self._check(response)
        raise AssertionError("unreachable")  # pragma: no cover

    async def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """``GET [base]/Type/id``."""
        return json_body(await self.request("GET", f"{resource_type}/{resource_id}"))

    async def search_pages(
        self, resource_type: str, params: Mapping[str, str] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Every page (Bundle) of a search, following ``next`` links, at most ``max_pages``."""
        bundle = json_body(await self.request("GET", resource_type, params=dict(params or {})))
        pages = 1
        yield bundle
        while (link := next_link(bundle)) is not None:
            if pages >= self.max_pages:
                raise FhirPageLimitError(f"search {resource_type} exceeded {self.max_pages} pages")
            bundle = json_body(await self.request("GET", link))
            pages += 1
            yield bundle

    async def search(
        self, resource_type: str, params: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """All resources a search returns, across pages."""
        out: list[dict[str, Any]] = []
        async for page in self.search_pages(resource_type, params):
            out.extend(bundle_resources(page))
        return out

    async def binary(self, url: str) -> tuple[bytes, str | None]:
        """Fetch an attachment URL: ``(bytes, contentType)``."""
        return _binary_content(await self.request("GET", url, headers={"Accept": "*/*"}))
