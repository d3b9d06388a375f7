"""REST and Bulk clients against httpx.MockTransport: paging, retries, errors, polling."""

from __future__ import annotations

import asyncio
import gzip

import httpx
import orjson
import pytest

from fhir_adapters.bulk import BulkDataClient
from fhir_adapters.client import (
    AsyncFhirClient,
    BulkJobError,
    BulkTimeoutError,
    FhirAuthError,
    FhirClient,
    FhirNotFoundError,
    FhirPageLimitError,
    FhirServerError,
    RetryPolicy,
)

BASE = "http://fhir.test/fhir"


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, content=orjson.dumps(body), headers=headers,
                          extensions={})  # fmt: skip


def _page(n: int, total: int) -> dict[str, object]:
    links = [{"relation": "next", "url": f"{BASE}/Observation?page={n + 1}"}] if n < total else []
    entry = [{"resource": {"resourceType": "Observation", "id": f"o{n}"}}]
    return {"resourceType": "Bundle", "type": "searchset", "link": links, "entry": entry}


def test_search_follows_next_links_and_sends_the_bearer_token() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return _json(_page(int(request.url.params.get("page", "1")), 3))

    client = FhirClient(BASE, auth="tok", transport=httpx.MockTransport(handler))
    ids = [r["id"] for r in client.search("Observation", {"patient": "p1"})]
    assert ids == ["o1", "o2", "o3"]
    assert seen == ["Bearer tok"] * 3


def test_page_limit_is_enforced() -> None:
    handler = lambda request: _json(_page(int(request.url.params.get("page", "1")), 50))  # noqa: E731
    client = FhirClient(BASE, max_pages=2, transport=httpx.MockTransport(handler))
    with pytest.raises(FhirPageLimitError):
        client.search("Observation")


def test_retries_honour_retry_after_then_succeed() -> None:
    answers = [_json({}, 429, {"Retry-After": "7"}), _json({}, 503),
               _json({"resourceType": "Patient", "id": "p1"})]  # fmt: skip
    sleeps: list[float] = []
    client = FhirClient(
        BASE,
        transport=httpx.MockTransport(lambda r: answers.pop(0)),
        retry=RetryPolicy(retries=3, backoff=0.25),
        sleep=sleeps.append,
    )
    assert client.read("Patient", "p1")["id"] == "p1"
    assert sleeps == [7.0, 0.5]


def test_errors_map_to_the_exception_tree() -> None:
    outcome = {"resourceType": "OperationOutcome", "issue": [{"diagnostics": "gone"}]}
    for status, exc in ((404, FhirNotFoundError), (401, FhirAuthError), (500, FhirServerError)):
        transport = httpx.MockTransport(lambda r, s=status: _json(outcome, s))
        client = FhirClient(
            BASE, retry=RetryPolicy(retries=1, backoff=0), sleep=lambda s: None, transport=transport
        )
        with pytest.raises(exc, match="gone"):
            client.read("Patient", "x")


def test_binary_resolver_decodes_a_fhir_binary() -> None:
    body = {"resourceType": "Binary", "contentType": "text/plain", "data": "aGVsbG8="}
    client = FhirClient(BASE, transport=httpx.MockTransport(
        lambda r: _json(body, headers={"content-type": "application/fhir+json"})))  # fmt: skip
    assert client.binary("Binary/b1") == (b"hello", "text/plain")


def test_async_client_pages_and_retries() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return _json({}, 502)
        return _json(_page(int(request.url.params.get("page", "1")), 2))

    async def run() -> list[str]:
        async def no_sleep(s: float) -> None:
            return None

        async with AsyncFhirClient(BASE, transport=httpx.MockTransport(handler),
                                   sleep=no_sleep) as client:  # fmt: skip
            return [r["id"] for r in await client.search("Observation")]

    assert asyncio.run(run()) == ["o1", "o2"]


def _bulk_handler(polls_before_done: int, fail: bool = False) -> httpx.MockTransport:
    state = {"polls": 0}
    ndjson = b'{"resourceType":"Patient","id":"p1"}\n'

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("$export"):
            assert request.headers["prefer"] == "respond-async"
            assert request.url.params["_type"] == "Patient,Observation"
            return httpx.Response(202, headers={"Content-Location": f"{BASE}/status/1"})
        if path.endswith("/status/1"):
            state["polls"] += 1
            if fail:
                return _json({"resourceType": "OperationOutcome", "issue": []}, 400)
            if state["polls"] <= polls_before_done:
                return httpx.Response(202, headers={"Retry-After": "2", "X-Progress": "50%"})
            files = [
                {"type": "Patient", "url": f"{BASE}/files/p.ndjson"},
                {"type": "Patient", "url": f"{BASE}/files/q.ndjson.gz"},
            ]
            return _json(
                {
                    "transactionTime": "2150-01-01T00:00:00Z",
                    "request": "x",
                    "requiresAccessToken": True,
                    "error": [],
                    "output": files,
                }
            )
        if path.endswith("p.ndjson"):
            return httpx.Response(200, content=gzip.compress(ndjson),
                                  headers={"Content-Encoding": "gzip"})  # fmt: skip
        if path.endswith("q.ndjson.gz"):
            return httpx.Response(200, content=gzip.compress(ndjson))
        return httpx.Response(404)

    return httpx.MockTransport(handler)


def test_bulk_export_polls_and_downloads_plain_and_gzip(tmp_path: object) -> None:
    from pathlib import Path

    out = Path(str(tmp_path))
    sleeps: list[float] = []
    client = FhirClient(BASE, transport=_bulk_handler(2))
    bulk = BulkDataClient(client, sleep=sleeps.append)
    manifest, paths = bulk.export(out, types=["Patient", "Observation"], cleanup=False)
    assert sleeps == [2.0, 2.0]
    assert manifest.requires_access_token and len(manifest.output) == 2
    assert [p.name for p in paths] == ["Patient.000.ndjson", "Patient.001.ndjson.gz"]
    assert paths[0].read_bytes() == gzip.decompress(paths[1].read_bytes())


def test_bulk_export_error_and_timeout() -> None:
    with pytest.raises(BulkJobError):
        BulkDataClient(FhirClient(BASE, transport=_bulk_handler(0, fail=True))).wait(
            f"{BASE}/status/1"
        )
    clock = iter(range(0, 10_000, 100))
    bulk = BulkDataClient(FhirClient(BASE, transport=_bulk_handler(10**6)), timeout=250,
                          sleep=lambda s: None, clock=lambda: float(next(clock)))  # fmt: skip
    with pytest.raises(BulkTimeoutError):
        bulk.wait(f"{BASE}/status/1")
