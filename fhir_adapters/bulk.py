"""FHIR Bulk Data Access ($export) client: kick-off, polling, manifest, NDJSON download.

Works over a ``FhirClient`` (so it shares its auth: a bearer token or
``SmartBackendAuth`` for SMART Backend Services, its retries and its transport).

* kick-off: ``GET [base]/$export``, ``[base]/Patient/$export`` or
  ``[base]/Group/{id}/$export`` with ``_type`` / ``_since``, ``Prefer: respond-async``;
  the server must answer 202 with ``Content-Location`` (the status URL);
* polling: 202 means "in progress": wait ``Retry-After`` when the server sends it, else
  an exponential backoff from ``min_poll`` to ``max_poll`` seconds, until ``timeout``;
  200 carries the manifest; an error status raises ``BulkJobError``;
* download: the access token goes with a file request only when the manifest says
  ``requiresAccessToken: true`` AND the file is on the FHIR server's own origin (scheme,
  host, port) -- the Bulk Data spec; files on another host (a pre-signed object-store
  URL) must not receive the server's bearer token;
* each manifest output file is streamed to ``<Type>.<n>.ndjson`` (gzip
  Content-Encoding is decoded by httpx; a body that is itself gzip, e.g. a ``.gz``
  file, is kept compressed as ``.ndjson.gz``), never held in memory;
  ``fhir_adapters.ndjson`` reads the folder.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx

from fhir_adapters.client import (
    BulkJobError,
    BulkKickoffError,
    BulkTimeoutError,
    FhirClient,
    FhirHTTPError,
    FhirTransportError,
    json_body,
    retry_after_seconds,
    retryable_status,
)

__all__ = ["BulkDataClient", "ExportLevel", "Manifest", "ManifestFile", "same_origin"]

ExportLevel = Literal["system", "patient", "group"]
_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class ManifestFile:
    """One output (or error) file of the manifest."""

    type: str
    url: str
    count: int | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    """The completed export's manifest."""

    transaction_time: str
    request: str
    requires_access_token: bool
    output: tuple[ManifestFile, ...]
    error: tuple[ManifestFile, ...]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Manifest:
        def files(key: str) -> tuple[ManifestFile, ...]:
            out = []
            for f in body.get(key) or ():
                if isinstance(f, dict) and isinstance(f.get("url"), str):
                    count = f.get("count")
                    out.append(ManifestFile(str(f.get("type", "")), f["url"],
                                            count if isinstance(count, int) else None))  # fmt: skip
            return tuple(out)

        return cls(
            transaction_time=str(body.get("transactionTime", "")),
            request=str(body.get("request", "")),
            requires_access_token=bool(body.get("requiresAccessToken", False)),
            output=files("output"),
            error=files("error"),
        )


def same_origin(url: str, base_url: str) -> bool:
    """Whether ``url`` is on the server of ``base_url`` (scheme, host and port agree)."""
    a, b = httpx.URL(url), httpx.URL(base_url)
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


def _since(value: datetime | str) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError("_since must be timezone-aware")
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class BulkDataClient:
    """Runs Bulk Data exports against the server of ``client``."""

    def __init__(
        self,
        client: FhirClient,
        *,
        timeout: float = 3600.0,
        min_poll: float = 0.5,
        max_poll: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.min_poll = min_poll
        self.max_poll = max_poll
        self._sleep = sleep
        self._clock = clock

    def kickoff(
        self,
        level: ExportLevel = "system",
        *,
        group_id: str | None = None,
        types: Iterable[str] = (),
        since: datetime | str | None = None,
    ) -> str:
        """Start an export; returns the status URL."""
        if level == "system":
            path = "$export"
        elif level == "patient":
            path = "Patient/$export"
        elif level == "group":
            if not group_id:
                raise ValueError("a group export needs group_id")
            path = f"Group/{group_id}/$export"
        else:
            raise ValueError(f"level must be system, patient or group, got {level!r}")
        params: dict[str, str] = {}
        type_list = [t for t in types if t]
        if type_list:
            params["_type"] = ",".join(type_list)
        if since is not None:
            params["_since"] = _since(since)
        headers = {"Accept": "application/fhir+json", "Prefer": "respond-async"}
        try:
            response = self.client.request("GET", path, params=params, headers=headers)
        except FhirHTTPError as exc:
            raise BulkKickoffError(f"$export refused: {exc}") from exc
        location = response.headers.get("content-location")
        if response.status_code != 202 or not location:
            raise BulkKickoffError(
                f"$export answered {response.status_code} without a Content-Location"
            )
        return str(location)

    def wait(self, status_url: str) -> Manifest:
        """Poll the status URL until the manifest is ready (or error / timeout)."""
        deadline = self._clock() + self.timeout
        attempt = 0
        while True:
            try:
                response = self.client.request("GET", status_url)
            except FhirHTTPError as exc:
                raise BulkJobError(f"export failed: {exc}") from exc
            if response.status_code == 200:
                return Manifest.from_json(json_body(response))
            if response.status_code != 202:
                raise BulkJobError(f"unexpected status {response.status_code} from {status_url}")
            after = retry_after_seconds(response)
            delay = after if after is not None else self.min_poll * (2**attempt)
            delay = min(max(delay, 0.0), self.max_poll)
            if self._clock() + delay > deadline:
                raise BulkTimeoutError(f"export not complete after {self.timeout:.0f} s")
            self._sleep(delay)
            attempt += 1

    def download(self, manifest: Manifest, out_dir: Path) -> list[Path]:
        """Stream every output file into ``out_dir``; returns the written paths."""
        out_dir.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        seen: dict[str, int] = {}
        for f in manifest.output:
            n = seen.get(f.type, 0)
            seen[f.type] = n + 1
            stem = out_dir / f"{f.type or 'Resource'}.{n:03d}.ndjson"
            url = self.client.url(f.url)
            written.append(self._stream_to(url, stem, self.sends_token(manifest, url)))
        return written

    def sends_token(self, manifest: Manifest, url: str) -> bool:
        """Whether the download of ``url`` carries the client's credentials (module doc)."""
        return manifest.requires_access_token and same_origin(url, self.client.base_url)

    def _stream_to(self, url: str, stem: Path, with_token: bool) -> Path:
        """Stream ``url`` to ``stem`` (``.gz`` added when the body itself is gzip)."""
        retry = self.client.retry
        # ``auth=None`` drops the client's auth for this request; the default keeps it.
        auth: dict[str, Any] = {} if with_token else {"auth": None}
        for attempt in range(retry.retries + 1):
            try:
                with self.client.http.stream(
                    "GET", url, headers={"Accept": "application/fhir+ndjson"}, **auth
                ) as response:
                    if response.status_code >= 400:
                        if retryable_status("GET", response.status_code) and (
                            attempt < retry.retries
                        ):
                            self._sleep(retry.delay(attempt, response))
                            continue
                        raise BulkJobError(f"download of {url} failed: {response.status_code}")
                    tmp = stem.with_suffix(".part")
                    magic = b""
                    with tmp.open("wb") as fh:
                        for chunk in response.iter_bytes(_CHUNK):
                            if not magic:
                                magic = chunk[:2]
                            fh.write(chunk)
                    path = stem.with_name(stem.name + ".gz") if magic == _GZIP_MAGIC else stem
                    tmp.replace(path)
                    return path
            except httpx.TransportError as exc:
                if attempt >= retry.retries:
                    raise FhirTransportError(f"download of {url}: {exc!r}") from exc
                self._sleep(retry.delay(attempt, None))
        raise BulkJobError(f"download of {url} failed after {retry.retries + 1} attempts")

    def delete(self, status_url: str) -> None:
        """Tell the server the export's files may be removed (errors ignored: best effort)."""
        with contextlib.suppress(FhirHTTPError):
            self.client.request("DELETE", status_url)

    def export(
        self,
        out_dir: Path,
        level: ExportLevel = "system",
        *,
        group_id: str | None = None,
        types: Iterable[str] = (),
        since: datetime | str | None = None,
        cleanup: bool = True,
    ) -> tuple[Manifest, list[Path]]:
        """Kick off, wait, download into ``out_dir`` and (by default) delete the job."""
        status_url = self.kickoff(level, group_id=group_id, types=types, since=since)
        manifest = self.wait(status_url)
        paths = self.download(manifest, out_dir)
        if cleanup:
            self.delete(status_url)
        return manifest, paths
