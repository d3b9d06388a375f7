"""Gathering the FHIR resources a hook call needs: prefetch first, then ``fhirServer``.

For each prefetch key the request's prefetch is used when it holds a usable value
(a resource, a searchset Bundle — whose ``next`` pages are followed — or ``null``,
meaning "no data"); an absent key or an OperationOutcome means "not provided", and the
data are fetched from ``fhirServer`` with the bearer token (async httpx, bounded in
pages, resources and time). Tokens are only ever sent to URLs under ``fhirServer``.

When a required key (Patient, Encounter, Observations) cannot be had,
``PreconditionFailedError`` is raised and the route answers 412. Optional keys that cannot
be had become data-quality notes and the modality counts as missing.

Prefetch searches can only be bounded by ``today() - lookback_days``; an admission that
began before that bound (a long stay) would silently lose the start of its observation
window. For such an admission the window's own searches are run on ``fhirServer``
instead, or, without a server, the card says the window may be incomplete.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from cds_hooks.config import Settings
from cds_hooks.services import (
    KEY_RESOURCE_TYPE,
    PREFETCH_KEYS,
    REQUIRED_KEYS,
    PrefetchKey,
    ServiceDefinition,
)

__all__ = [
    "FetchError",
    "FhirFetcher",
    "GatheredData",
    "PreconditionFailedError",
    "gather_resources",
    "render_template",
]

_TOKEN = re.compile(r"\{\{\s*([^}]+?)\s*\}\}")
_TODAY = re.compile(r"^today\(\)\s*(?:([+-])\s*(\d+)\s*days?)?$")
_FHIR_JSON = "application/fhir+json"
# Keys whose prefetch templates are bounded by ``today() - lookback_days``.
_WINDOWED_KEYS = frozenset(
    {PrefetchKey.OBSERVATIONS, PrefetchKey.DOCUMENTS, PrefetchKey.IMAGING}
)


class PreconditionFailedError(Exception):
    """Required data could not be obtained (HTTP 412)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class FetchError(Exception):
    """A FHIR request failed (network, timeout, HTTP status, bad payload, bound exceeded)."""


@dataclass(slots=True)
class GatheredData:
    """Resources per prefetch key, where they came from, and what went wrong."""

    resources: dict[PrefetchKey, list[dict[str, Any]]] = field(default_factory=dict)
    source: dict[PrefetchKey, str] = field(default_factory=dict)  # "prefetch" | "fhirServer"
    notes: list[str] = field(default_factory=list)

    def all_resources(self) -> list[dict[str, Any]]:
        return [r for key in PREFETCH_KEYS for r in self.resources.get(key, [])]


def render_template(template: str, context: Mapping[str, Any], today: date) -> str | None:
    """Replace prefetch tokens; ``None`` when a context field the template needs is absent."""
    missing = False

    def _sub(match: re.Match[str]) -> str:
        nonlocal missing
        expr = match.group(1)
        if expr.startswith("context."):
            value = context.get(expr.removeprefix("context."))
            if not isinstance(value, str) or not value:
                missing = True
                return ""
            return quote(value, safe="")
        rel = _TODAY.match(expr)
        if rel:
            sign, days = rel.group(1), int(rel.group(2) or 0)
            delta = timedelta(days=days if sign == "+" else -days)
            return (today + delta).isoformat()
        raise ValueError(f"unsupported prefetch token {{{{{expr}}}}}")

    rendered = _TOKEN.sub(_sub, template)
    return None if missing else rendered


class FhirFetcher:
    """Reads and searches on one FHIR server with one bearer token, within bounds."""

    def __init__(
        self,
        base_url: str,
        access_token: str | None,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        headers = {"Accept": _FHIR_JSON}
        if access_token:
            headers["Authorization"] = f"Bearer {access_token}"
        self.max_pages = settings.fhir_max_pages
        self.max_resources = settings.fhir_max_resources
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(
                settings.fhir_read_timeout_s, connect=settings.fhir_connect_timeout_s
            ),
            limits=httpx.Limits(max_connections=settings.fhir_max_concurrency),
            follow_redirects=False,  # a redirect could carry the token off the server
            transport=transport,
        )

    async def __aenter__(self) -> FhirFetcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    def owns(self, url: str) -> bool:
        """Whether ``url`` lies under this server (the only place the token may go)."""
        return url.startswith(self.base_url) or url + "/" == self.base_url

    async def _get(self, url: str) -> dict[str, Any] | None:
        if not self.owns(url):
            raise FetchError("refusing to follow a link outside fhirServer")
        try:
            resp = await self._client.get(url)
        except httpx.TimeoutException as exc:
            raise FetchError(f"FHIR server timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise FetchError(f"FHIR server unreachable ({type(exc).__name__})") from exc
        if resp.status_code in (404, 410):
            return None
        if resp.status_code >= 400:
            raise FetchError(f"FHIR server answered HTTP {resp.status_code}")
        try:
            body = orjson.loads(resp.content)
        except orjson.JSONDecodeError as exc:
            raise FetchError("FHIR server sent a body that is not JSON") from exc
        if not isinstance(body, dict):
            raise FetchError("FHIR server sent JSON that is not a resource")
        return body

    async def read(self, relative: str) -> dict[str, Any] | None:
        """A read (``Patient/1``); ``None`` when the server has no such resource."""
        body = await self._get(self.base_url + relative)
        if body is not None and body.get("resourceType") == "OperationOutcome":
            raise FetchError("FHIR server answered with an OperationOutcome")
        return body

    async def search(self, relative: str) -> list[dict[str, Any]]:
        """Every resource of a search, following ``next`` links within the bounds."""
        bundle = await self._get(self.base_url + relative)
        if bundle is None:
            return []
        return await self.collect(bundle)

    async def collect(self, bundle: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Entries of ``bundle`` and of its following pages."""
        out: list[dict[str, Any]] = []
        page: Mapping[str, Any] | None = bundle
        pages = 0
        while page is not None:
            if page.get("resourceType") != "Bundle":
                raise FetchError(f"expected a Bundle, got {page.get('resourceType')!r}")
            out.extend(_entries(page))
            if len(out) > self.max_resources:
                raise FetchError(f"more than {self.max_resources} resources")
            nxt = _next_link(page)
            pages += 1
            if nxt is None:
                break
            if pages >= self.max_pages:
                raise FetchError(f"more than {self.max_pages} pages")
            page = await self._get(nxt)
        return out


def _entries(bundle: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for entry in bundle.get("entry") or ():
        res = entry.get("resource") if isinstance(entry, dict) else None
        # searchset Bundles may also carry OperationOutcome entries (search mode 'outcome')
        if isinstance(res, dict) and res.get("resourceType") not in (None, "OperationOutcome"):
            out.append(res)
    return out


def _next_link(bundle: Mapping[str, Any]) -> str | None:
    for link in bundle.get("link") or ():
        if isinstance(link, dict) and link.get("relation") == "next" and link.get("url"):
            return str(link["url"])
    return None


def _from_prefetch(value: Any, key: PrefetchKey) -> tuple[list[dict[str, Any]], bool] | None:
    """(resources, has_more_pages), or ``None`` when the EHR did not provide this key."""
    if value is None:
        return [], False  # the spec's "no data for this template"
    if not isinstance(value, dict):
        return None
    rtype = value.get("resourceType")
    if rtype == "OperationOutcome":
        return None
    if rtype == "Bundle":
        return _entries(value), _next_link(value) is not None
    if rtype == KEY_RESOURCE_TYPE[key]:
        return [value], False
    return None


async def _obtain(
    key: PrefetchKey,
    query: str | None,
    prefetched: Any,
    provided: bool,
    fetcher: FhirFetcher | None,
) -> tuple[list[dict[str, Any]], str]:
    if provided:
        got = _from_prefetch(prefetched, key)
        if got is not None:
            resources, more = got
            if not more:
                return resources, "prefetch"
            if fetcher is None:
                raise FetchError("prefetched Bundle has more pages and no fhirServer was given")
            assert isinstance(prefetched, dict)
            return await fetcher.collect(prefetched), "prefetch"
    if fetcher is None:
        raise FetchError("not in prefetch and no fhirServer was given")
    if query is None:
        raise FetchError("the hook context lacks a field its query needs")
    if "?" in query:
        return await fetcher.search(query), "fhirServer"
    found = await fetcher.read(query)
    return ([found] if found is not None else []), "fhirServer"


def _admission_window(
    encounters: list[dict[str, Any]], context: Mapping[str, Any], hours: int
) -> tuple[datetime, datetime] | None:
    """[start, start + hours) of the context's admission (or the latest inpatient one)."""
    from fhir_adapters.encounter import parse_encounter
    from fhir_adapters.errors import MalformedResourceError

    infos = []
    for enc in encounters:
        try:
            infos.append(parse_encounter(enc))
        except MalformedResourceError:
            continue
    wanted = context.get("encounterId")
    chosen = [i for i in infos if i.encounter_id == wanted] if wanted else [
        i for i in infos if i.is_inpatient
    ]
    if not chosen:
        return None
    start = max(i.start for i in chosen)
    return start, start + timedelta(hours=hours)


def _windowed(
    key: PrefetchKey, context: Mapping[str, Any], start: datetime, end: datetime
) -> str | None:
    patient = quote(str(context.get("patientId", "")), safe="")
    lo = quote(start.isoformat(), safe="")
    hi = quote(end.isoformat(), safe="")
    param = {
        PrefetchKey.OBSERVATIONS: "date",
        PrefetchKey.DOCUMENTS: "date",
        PrefetchKey.IMAGING: "started",
    }.get(key)
    if param is None:
        return None
    count = "&_count=1000" if key is PrefetchKey.OBSERVATIONS else ""
    return f"{KEY_RESOURCE_TYPE[key]}?patient={patient}&{param}=ge{lo}&{param}=lt{hi}{count}"


def _starts_before_bound(window: tuple[datetime, datetime] | None, bound: date) -> bool:
    """Whether the window may begin before a prefetch's ``ge<bound>`` date filter.

    The bound is a date without time zone, which servers read in their own zone, so an
    admission on the bound's own day counts as (possibly) before it.
    """
    return window is not None and window[0].date() <= bound


async def _recover_window(
    results: list[tuple[PrefetchKey, list[dict[str, Any]] | None, str]],
    queries: Mapping[PrefetchKey, str | None],
    fetcher: FhirFetcher | None,
    bound: date,
    window_hours: int,
) -> list[str]:
    """Refetch date-bounded prefetched keys with the admission's own window, in place.

    Returns data-quality notes for what could not be recovered.
    """
    stale = [
        i for i, (key, res, src) in enumerate(results)
        if key in _WINDOWED_KEYS and res is not None and src == "prefetch"
    ]
    if not stale:
        return []
    if fetcher is None:
        return [
            f"the admission began before the prefetch's date limit ({bound.isoformat()}) "
            f"and no fhirServer was given: data from the first {window_hours} h of the stay "
            "may be missing"
        ]
    notes: list[str] = []

    async def refetch(i: int) -> None:
        key = results[i][0]
        query = queries[key]
        try:
            if query is None:
                raise FetchError("the hook context lacks a field its query needs")
            results[i] = (key, await fetcher.search(query), "fhirServer")
        except FetchError as exc:
            notes.append(
                f"{KEY_RESOURCE_TYPE[key]} data of the admission's first {window_hours} h "
                f"(before the prefetch's date limit {bound.isoformat()}) could not be "
                f"fetched: {exc}"
            )

    await asyncio.gather(*(refetch(i) for i in stale))
    return notes


async def gather_resources(
    service: ServiceDefinition,
    context: Mapping[str, Any],
    prefetch: Mapping[str, Any] | None,
    settings: Settings,
    fhir_server: str | None,
    access_token: str | None,
    *,
    window_hours: int,
    transport: httpx.AsyncBaseTransport | None = None,
) -> GatheredData:
    """Resources for every prefetch key of ``service`` (see module docstring).

    ``window_hours`` is the served model's observation window (``ModelService``), so the
    searches bound here match what the model reads.
    """
    prefetch = prefetch or {}
    templates = service.prefetch(settings.lookback_days)
    today = date.today()
    bound = today - timedelta(days=settings.lookback_days)  # the templates' ``ge`` date
    queries = {k: render_template(templates[k], context, today) for k in PREFETCH_KEYS}
    encounter_id = context.get("encounterId")
    if isinstance(encounter_id, str) and encounter_id:  # a known encounter: read it directly
        queries[PrefetchKey.ENCOUNTER] = f"Encounter/{quote(encounter_id, safe='')}"

    data = GatheredData()
    fetcher = (
        FhirFetcher(fhir_server, access_token, settings, transport=transport)
        if fhir_server
        else None
    )

    async def one(key: PrefetchKey) -> tuple[PrefetchKey, list[dict[str, Any]] | None, str]:
        try:
            resources, src = await _obtain(
                key, queries[key], prefetch.get(key), key in prefetch, fetcher
            )
        except FetchError as exc:
            return key, None, str(exc)
        return key, resources, src

    head = (PrefetchKey.PATIENT, PrefetchKey.ENCOUNTER)
    rest = tuple(k for k in PREFETCH_KEYS if k not in head)
    try:
        async with asyncio.timeout(settings.fhir_total_timeout_s):
            results = list(await asyncio.gather(*(one(k) for k in head)))
            # Fetching ourselves, we can bound searches by the admission's own window
            # (prefetch tokens cannot express it); the prefetch, when given, is used as is.
            encounters = next((r for k, r, _ in results if k is PrefetchKey.ENCOUNTER), None)
            window = _admission_window(encounters or [], context, window_hours)
            if window is not None:
                for key in rest:
                    queries[key] = _windowed(key, context, *window) or queries[key]
            tail = list(await asyncio.gather(*(one(k) for k in rest)))
            if _starts_before_bound(window, bound):
                data.notes += await _recover_window(
                    tail, queries, fetcher, bound, window_hours
                )
            results += tail
    except TimeoutError as exc:
        raise PreconditionFailedError(
            f"FHIR data could not be gathered within {settings.fhir_total_timeout_s:g} s"
        ) from exc
    finally:
        if fetcher is not None:
            await fetcher.__aexit__()

    for key, resources, info in results:
        if resources is None:
            if key in REQUIRED_KEYS:
                raise PreconditionFailedError(
                    f"required data '{key}' could not be obtained: {info}", key
                )
            data.notes.append(f"{KEY_RESOURCE_TYPE[key]} data unavailable: {info}")
            data.resources[key] = []
            continue
        data.resources[key] = resources
        data.source[key] = info
    for key in (PrefetchKey.PATIENT, PrefetchKey.ENCOUNTER):
        if not data.resources[key]:
            rtype = KEY_RESOURCE_TYPE[key]
            raise PreconditionFailedError(f"no {rtype} found for this hook call", key)
    return data
