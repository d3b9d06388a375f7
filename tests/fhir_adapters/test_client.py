"""REST and Bulk clients against httpx.MockTransport: paging, retries, errors, polling."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable
from pathlib import Path

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
    FhirRateLimitError,
    FhirServerError,
    FhirTransportError,
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


def _counting(answers: list[httpx.Response | Exception]) -> tuple[httpx.MockTransport, list[str]]:
    """A transport that plays ``answers`` in order (raising exceptions) and logs methods."""
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handler), calls


def _client(transport: httpx.MockTransport) -> FhirClient:
    return FhirClient(BASE, transport=transport, retry=RetryPolicy(retries=3, backoff=0),
                      sleep=lambda s: None)  # fmt: skip


BUNDLE = {"resourceType": "Bundle", "type": "transaction", "entry": []}
REPLY = {"resourceType": "Bundle", "type": "transaction-response", "entry": []}


@pytest.mark.parametrize(
    ("first", "error"),
    [(_json({}, 503), FhirServerError), (_json({}, 500), FhirServerError),
     (httpx.ReadTimeout("slow"), FhirTransportError),
     (httpx.RemoteProtocolError("dropped"), FhirTransportError)],
)  # fmt: skip
def test_transaction_post_is_not_repeated_after_it_may_have_been_applied(
    first: httpx.Response | Exception, error: type[Exception]
) -> None:
    transport, calls = _counting([first, _json(REPLY)])
    with pytest.raises(error):
        _client(transport).transaction(BUNDLE)
    assert calls == ["POST"]  # a retry could create the Bundle's resources twice


def test_transaction_post_is_retried_on_429_and_connect_errors() -> None:
    answers: list[httpx.Response | Exception] = [
        httpx.ConnectError("refused"),
        _json({}, 429, {"Retry-After": "0"}),
        _json(REPLY),
    ]
    transport, calls = _counting(answers)
    assert _client(transport).transaction(BUNDLE)["type"] == "transaction-response"
    assert calls == ["POST"] * 3
    transport, calls = _counting([_json({}, 429)] * 4)
    with pytest.raises(FhirRateLimitError):
        _client(transport).transaction(BUNDLE)
    assert len(calls) == 4


def test_get_is_still_retried_on_5xx_and_read_errors() -> None:
    answers: list[httpx.Response | Exception] = [
        httpx.ReadTimeout("slow"),
        _json({}, 502),
        _json({"resourceType": "Patient", "id": "p"}),
    ]
    transport, calls = _counting(answers)
    assert _client(transport).read("Patient", "p")["id"] == "p"
    assert calls == ["GET"] * 3


def test_async_transaction_style_post_is_not_repeated_on_5xx() -> None:
    transport, calls = _counting([_json({}, 503), _json(REPLY)])

    async def run() -> None:
        async def no_sleep(s: float) -> None:
            return None

        async with AsyncFhirClient(BASE, transport=transport, sleep=no_sleep) as client:
            await client.request("POST", "", content=b"{}")

    with pytest.raises(FhirServerError):
        asyncio.run(run())
    assert calls == ["POST"]


def test_async_client_sends_the_bearer_token_and_bounds_pages() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization", ""))
        return _json(_page(int(request.url.params.get("page", "1")), 50))

    async def run() -> None:
        async with AsyncFhirClient(BASE, auth="secret", max_pages=3,
                                   transport=httpx.MockTransport(handler)) as client:  # fmt: skip
            await client.search("Observation")

    with pytest.raises(FhirPageLimitError):
        asyncio.run(run())
    assert seen == ["Bearer secret"] * 3  # stopped at the bound, token on every page


def _kickoff_recorder() -> tuple[httpx.MockTransport, list[httpx.URL]]:
    urls: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        urls.append(request.url)
        assert request.headers["prefer"] == "respond-async"
        return httpx.Response(202, headers={"Content-Location": f"{BASE}/status/9"})

    return httpx.MockTransport(handler), urls


@pytest.mark.parametrize(
    ("level", "group_id", "path"),
    [("patient", None, "/fhir/Patient/$export"), ("group", "g-7", "/fhir/Group/g-7/$export")],
)
def test_bulk_kickoff_at_patient_and_group_level_with_type_and_since(
    level: str, group_id: str | None, path: str
) -> None:
    from datetime import UTC, datetime

    transport, urls = _kickoff_recorder()
    bulk = BulkDataClient(FhirClient(BASE, transport=transport))
    since = datetime(2150, 1, 2, 3, 4, 5, tzinfo=UTC)
    status = bulk.kickoff(level, group_id=group_id, types=["Patient", "Observation"],  # type: ignore[arg-type]
                          since=since)  # fmt: skip
    assert status == f"{BASE}/status/9"
    (url,) = urls
    assert url.path == path
    assert url.params["_type"] == "Patient,Observation"
    assert url.params["_since"] == "2150-01-02T03:04:05Z"


def test_bulk_polling_backs_off_exponentially_without_retry_after() -> None:
    polls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        polls["n"] += 1
        if polls["n"] <= 5:
            return httpx.Response(202)  # no Retry-After
        return _json({"transactionTime": "t", "request": "r", "output": []})

    sleeps: list[float] = []
    bulk = BulkDataClient(FhirClient(BASE, transport=httpx.MockTransport(handler)),
                          min_poll=0.5, max_poll=4.0, sleep=sleeps.append)  # fmt: skip
    manifest = bulk.wait(f"{BASE}/status/1")
    assert manifest.output == ()
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 4.0]  # doubling, capped at max_poll


def _manifest_files(requires_token: bool) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/status/1"):
            files = [
                {"type": "Patient", "url": f"{BASE}/files/own.ndjson"},
                {"type": "Patient", "url": "https://bucket.storage.test/x.ndjson"},
                {"type": "Patient", "url": "http://fhir.test:8443/fhir/files/port.ndjson"},
            ]
            return _json({"transactionTime": "t", "request": "r", "output": files,
                          "requiresAccessToken": requires_token})  # fmt: skip
        return httpx.Response(200, content=b'{"resourceType":"Patient","id":"p"}\n')

    return handler


@pytest.mark.parametrize("requires_token", [True, False])
def test_bulk_download_sends_the_token_only_when_required_and_same_origin(
    tmp_path: Path, requires_token: bool
) -> None:
    auth_by_host: dict[str, str | None] = {}
    files = _manifest_files(requires_token)

    def handler(request: httpx.Request) -> httpx.Response:
        if "/files/" in request.url.path or "storage" in str(request.url.host):
            auth_by_host[f"{request.url.host}:{request.url.port}"] = request.headers.get(
                "authorization"
            )
        return files(request)

    client = FhirClient(BASE, auth="server-token", transport=httpx.MockTransport(handler))
    bulk = BulkDataClient(client)
    paths = bulk.download(bulk.wait(f"{BASE}/status/1"), tmp_path)
    assert len(paths) == 3
    assert auth_by_host == {
        "fhir.test:None": "Bearer server-token" if requires_token else None,
        "bucket.storage.test:None": None,  # another host never gets the server's token
        "fhir.test:8443": None,  # another port is another origin
    }
