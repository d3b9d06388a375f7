"""Gathering FHIR data: prefetch tokens, prefetch payload forms, paging, bounds, 412."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from cds_hooks.config import Settings
from cds_hooks.fhir_data import PreconditionFailedError, gather_resources, render_template
from cds_hooks.services import SERVICES, PrefetchKey, ServiceId
from tests.conftest import free_port

PATIENT = {"resourceType": "Patient", "id": "p1"}
ENCOUNTER = {"resourceType": "Encounter", "id": "e1", "subject": {"reference": "Patient/p1"}}
BASE = "https://ehr.example.org/fhir"


def _obs(i: int) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": f"o{i}", "subject": {"reference": "Patient/p1"}}


def _bundle(resources: list[dict[str, Any]], next_url: str | None = None) -> dict[str, Any]:
    b: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }
    if next_url:
        b["link"] = [{"relation": "next", "url": next_url}]
    return b


def _full_prefetch() -> dict[str, Any]:
    return {
        "patient": PATIENT,
        "encounter": _bundle([ENCOUNTER]),
        "observations": _bundle([_obs(1)]),
        "documents": _bundle([]),
        "imaging": None,
    }


PV = next(s for s in SERVICES if s.id == ServiceId.PATIENT_VIEW)


def _gather(prefetch: dict[str, Any] | None, server: str | None = None, **kw: Any) -> Any:
    return asyncio.run(
        gather_resources(
            PV, {"patientId": "p1"}, prefetch, Settings(), server, "tok", window_hours=48, **kw
        )
    )


def test_prefetch_tokens_use_only_context_fields_and_today() -> None:
    for service in SERVICES:
        for template in service.prefetch(30).values():
            for token in template.split("{{")[1:]:
                expr = token.split("}}")[0]
                assert expr.startswith("context.") or expr.startswith("today()"), expr


def test_relative_date_token_is_rendered() -> None:
    out = render_template(
        "Observation?patient={{context.patientId}}&date=ge{{today() - 30 days}}",
        {"patientId": "p1"},
        date(2026, 3, 31),
    )
    assert out == "Observation?patient=p1&date=ge2026-03-01"


def test_template_with_absent_context_field_is_not_rendered() -> None:
    out = render_template("Encounter/{{context.encounterId}}", {"patientId": "p"}, date.today())
    assert out is None


def test_complete_prefetch_needs_no_server() -> None:
    data = _gather(_full_prefetch())
    assert data.resources[PrefetchKey.OBSERVATIONS] == [_obs(1)]
    assert data.source[PrefetchKey.PATIENT] == "prefetch"
    assert data.resources[PrefetchKey.IMAGING] == []  # null: "no data", not "not provided"


def test_missing_required_prefetch_without_server_is_412() -> None:
    pre = _full_prefetch()
    del pre["observations"]
    with pytest.raises(PreconditionFailedError, match="observations"):
        _gather(pre)


def test_missing_optional_prefetch_becomes_a_quality_note() -> None:
    pre = _full_prefetch()
    del pre["documents"]
    data = _gather(pre)
    assert any("DocumentReference" in n for n in data.notes)


def test_operation_outcome_in_prefetch_counts_as_not_provided() -> None:
    pre = _full_prefetch()
    pre["observations"] = {"resourceType": "OperationOutcome", "issue": []}
    with pytest.raises(PreconditionFailedError):
        _gather(pre)


def test_paged_prefetch_bundle_is_followed_on_fhir_server() -> None:
    pages = {
        f"{BASE}/Observation?page=2": _bundle([_obs(2)], f"{BASE}/Observation?page=3"),
        f"{BASE}/Observation?page=3": _bundle([_obs(3)]),
    }
    seen_auth: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen_auth.append(request.headers.get("authorization", ""))
        return httpx.Response(200, json=pages[str(request.url)])

    pre = _full_prefetch()
    pre["observations"] = _bundle([_obs(1)], f"{BASE}/Observation?page=2")
    data = _gather(pre, BASE, transport=httpx.MockTransport(handler))
    assert [o["id"] for o in data.resources[PrefetchKey.OBSERVATIONS]] == ["o1", "o2", "o3"]
    assert seen_auth == ["Bearer tok", "Bearer tok"]


def test_next_link_off_the_fhir_server_is_not_followed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:  # pragma: no cover - must not run
        raise AssertionError(f"token sent to {request.url}")

    pre = _full_prefetch()
    pre["observations"] = _bundle([_obs(1)], "https://elsewhere.example.com/steal?page=2")
    with pytest.raises(PreconditionFailedError, match="outside fhirServer"):
        _gather(pre, BASE, transport=httpx.MockTransport(handler))


def test_page_bound_is_enforced() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        n = int(request.url.params["page"])
        return httpx.Response(200, json=_bundle([_obs(n)], f"{BASE}/Observation?page={n + 1}"))

    pre = _full_prefetch()
    pre["observations"] = _bundle([_obs(1)], f"{BASE}/Observation?page=2")
    with pytest.raises(PreconditionFailedError, match="pages"):
        _gather(pre, BASE, transport=httpx.MockTransport(handler))


def test_unreachable_fhir_server_is_412() -> None:
    dead = f"http://127.0.0.1:{free_port()}/fhir"
    with pytest.raises(PreconditionFailedError, match="unreachable"):
        _gather(None, dead)


def test_fhir_server_refusing_the_token_is_412() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(401))
    with pytest.raises(PreconditionFailedError, match="401"):
        _gather(None, BASE, transport=transport)


# --- long stays: the admission began before the prefetch's date bound ----------------------


def _admission(days_ago: int) -> dict[str, Any]:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=days_ago)
    return {
        "resourceType": "Encounter",
        "id": "e-long",
        "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": "Patient/p1"},
        "period": {"start": start.isoformat()},
    }


def _long_stay_prefetch(days_ago: int) -> dict[str, Any]:
    pre = _full_prefetch()
    pre["encounter"] = _bundle([_admission(days_ago)])
    pre["observations"] = _bundle([_obs(99)])  # only what lies after today() - 30 days
    return pre


def test_long_stay_window_is_fetched_from_the_fhir_server() -> None:
    """Admitted 40 days ago: the 30-day prefetch misses the first 48 h, so the window's
    own searches are run on fhirServer and replace the prefetched lists."""
    searched: list[str] = []
    early = {"Observation": [_obs(1), _obs(2)], "DocumentReference": [], "ImagingStudy": []}

    def handler(request: httpx.Request) -> httpx.Response:
        searched.append(str(request.url))
        rtype = request.url.path.rsplit("/", 1)[-1]
        return httpx.Response(200, json=_bundle(early[rtype]))

    pre = _long_stay_prefetch(40)
    data = _gather(pre, BASE, transport=httpx.MockTransport(handler))
    assert [o["id"] for o in data.resources[PrefetchKey.OBSERVATIONS]] == ["o1", "o2"]
    assert data.source[PrefetchKey.OBSERVATIONS] == "fhirServer"
    obs_query = next(u for u in searched if "/Observation?" in u)
    start = datetime.fromisoformat(pre["encounter"]["entry"][0]["resource"]["period"]["start"])
    end = start + timedelta(hours=48)
    bounds = parse_qs(urlsplit(obs_query).query)["date"]
    assert sorted(bounds) == [f"ge{start.isoformat()}", f"lt{end.isoformat()}"]
    assert {u.split("?")[0].rsplit("/", 1)[-1] for u in searched} == set(early)
    assert not data.notes


def test_long_stay_without_fhir_server_gets_a_data_quality_note() -> None:
    data = _gather(_long_stay_prefetch(40))
    assert data.resources[PrefetchKey.OBSERVATIONS] == [_obs(99)]  # kept, but flagged
    assert any("before the prefetch's date limit" in n for n in data.notes), data.notes


def test_long_stay_refetch_failure_keeps_prefetch_and_says_so() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(503))
    data = _gather(_long_stay_prefetch(40), BASE, transport=transport)
    assert data.resources[PrefetchKey.OBSERVATIONS] == [_obs(99)]
    assert any("Observation data of the admission's first 48 h" in n for n in data.notes)


def test_recent_admission_uses_the_prefetch_as_is() -> None:
    def handler(request: httpx.Request) -> httpx.Response:  # pragma: no cover - must not run
        raise AssertionError(f"unexpected fetch {request.url}")

    data = _gather(_long_stay_prefetch(3), BASE, transport=httpx.MockTransport(handler))
    assert data.resources[PrefetchKey.OBSERVATIONS] == [_obs(99)]
    assert data.source[PrefetchKey.OBSERVATIONS] == "prefetch" and not data.notes


def test_fetched_searches_use_the_given_window_hours() -> None:
    searched: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        searched.append(str(request.url))
        if request.url.path.endswith("/Patient/p1"):
            return httpx.Response(200, json=PATIENT)
        if "Encounter" in request.url.path:
            return httpx.Response(200, json=_bundle([_admission(2)]))
        return httpx.Response(200, json=_bundle([]))

    asyncio.run(
        gather_resources(
            PV, {"patientId": "p1"}, None, Settings(window_hours=48), BASE, "tok",
            window_hours=12, transport=httpx.MockTransport(handler),
        )
    )
    obs_query = next(u for u in searched if "/Observation?" in u)
    lo, hi = sorted(parse_qs(urlsplit(obs_query).query)["date"])
    span = datetime.fromisoformat(hi[2:]) - datetime.fromisoformat(lo[2:])
    assert span == timedelta(hours=12)
