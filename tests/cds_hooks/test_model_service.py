"""The served model: one observation window, training combinations, X-rays fetched from
fhirServer, and inference serialised across prediction timeouts."""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from cds_hooks.config import Settings, default_model_path
from cds_hooks.main import create_app
from cds_hooks.model_service import FhirBinaryResolver, ModelService, resolve_window_hours
from tests.cds_hooks.conftest import audit_rows, hook_body, make_settings
from tests.cds_hooks.http_fixtures import static_server

PV = "/cds-services/patient-view"
TOKEN = "ehr-access-token"


def _patient(demo_patients: list[dict[str, Any]], pattern: str) -> dict[str, Any]:
    return next(p for p in demo_patients if p["pattern"] == pattern)


# --- one observation window ----------------------------------------------------------------


def test_window_is_the_setting_when_the_checkpoint_records_none() -> None:
    assert resolve_window_hours({}, Settings(window_hours=24)) == 24
    assert resolve_window_hours({"training": {"epochs": 3}}, Settings()) == 48


def test_window_recorded_in_the_checkpoint_wins_over_the_default() -> None:
    assert resolve_window_hours({"window_hours": 24}, Settings()) == 24
    assert resolve_window_hours({"training": {"window_hours": 36}}, Settings()) == 36


def test_explicit_window_contradicting_the_checkpoint_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MOE_HEALTH_WINDOW_HOURS", "48")
    with pytest.raises(ValueError, match="trained on a 24 h observation window"):
        resolve_window_hours({"window_hours": 24}, Settings())
    assert resolve_window_hours({"window_hours": 48}, Settings()) == 48  # agreeing is fine


def test_loading_a_checkpoint_that_records_its_window(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(default_model_path(), folder)
    config = json.loads((folder / "config.json").read_text())
    config["window_hours"] = 24
    (folder / "config.json").write_text(json.dumps(config))
    loaded = ModelService.load(make_settings(tmp_path, model_path=folder))
    assert loaded.window_hours == 24
    with pytest.raises(ValueError, match="contradicts the checkpoint"):
        ModelService.load(make_settings(tmp_path, model_path=folder, window_hours=48))


def test_the_model_window_bounds_both_the_fhir_search_and_the_card(
    tmp_path: Path, demo_model: ModelService, demo_patients: list[dict[str, Any]]
) -> None:
    """A 24 h model: the service searches fhirServer for 24 h after admission (not the
    setting's 48 h) and the card's data window says 24 h."""
    patient = _patient(demo_patients, "E+T")
    pre = patient["prefetch"]
    encounter = pre["encounter"]["entry"][0]["resource"]
    searched: dict[str, str] = {}

    def fhir(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/fhir/")
        rtype = path.split("/")[0]
        if path.startswith("Patient/"):
            return httpx.Response(200, json=pre["patient"])
        if path.startswith("Encounter/"):
            return httpx.Response(200, json=encounter)
        searched[rtype] = str(request.url)
        key = {"Observation": "observations", "DocumentReference": "documents"}.get(rtype)
        empty = {"resourceType": "Bundle", "type": "searchset"}
        return httpx.Response(200, json=pre[key] if key else empty)

    model = dataclasses.replace(demo_model, window_hours=24)
    settings = make_settings(tmp_path)
    assert settings.window_hours == 48
    body = hook_body(patient, fhirServer="https://ehr.example.org/fhir")
    del body["prefetch"]
    with TestClient(create_app(settings, model)) as client:
        client.app.state.cds.fhir_transport = httpx.MockTransport(fhir)  # type: ignore[attr-defined]
        resp = client.post(PV, json=body)
    assert resp.status_code == 200, resp.text
    query = parse_qs(urlsplit(searched["Observation"]).query)
    lo, hi = sorted(query["date"])  # "ge<start>", "lt<end>"
    start = datetime.fromisoformat(lo.removeprefix("ge"))
    end = datetime.fromisoformat(hi.removeprefix("lt"))
    assert end - start == timedelta(hours=24)
    for card in resp.json()["cards"]:
        assert "UTC (24 h)" in card["detail"]
        assert "first 24 h of the admission" in card["detail"]
        assert card["extension"]["org.moe-health.explanation"]["hoursCovered"] <= 24


# --- training combinations -------------------------------------------------------------------


def test_trained_combinations_come_from_the_loaded_checkpoint(demo_model: ModelService) -> None:
    config = json.loads((default_model_path() / "config.json").read_text())
    names = ("EHR", "TEXT", "IMAGE")
    expected = tuple(
        tuple(n for n, on in zip(names, combo, strict=True) if on)
        for combo in config["model_config"]["moe"]["combinations"]
    )
    assert demo_model.trained_combinations == expected
    assert demo_model.info("http://x").trained_combinations == expected


# --- X-rays referenced by URL under fhirServer -------------------------------------------------


def _xray_by_url(patient: dict[str, Any], url: str) -> tuple[dict[str, Any], bytes]:
    """``patient``'s hook body with its X-ray DICOM moved from inline data to ``url``."""
    body = hook_body(patient)
    doc = next(
        e["resource"]
        for e in body["prefetch"]["documents"]["entry"]
        if e["resource"]["content"][0]["attachment"].get("contentType") == "application/dicom"
    )
    attachment = doc["content"][0]["attachment"]
    dicom = base64.b64decode(attachment.pop("data"))
    attachment["url"] = url
    return body, dicom


def _with_fhir_server(body: dict[str, Any], base: str) -> dict[str, Any]:
    body["fhirServer"] = base
    body["fhirAuthorization"] = {
        "access_token": TOKEN,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "user/Binary.read",
        "subject": "moe-health",
    }
    return body


@pytest.mark.parametrize("relative", [True, False], ids=["Binary/id", "absolute-url"])
def test_xray_by_url_under_fhir_server_is_fetched_with_the_token(
    client: TestClient, demo_patients: list[dict[str, Any]], relative: bool
) -> None:
    patient = _patient(demo_patients, "E+I")
    _, dicom = _xray_by_url(patient, "unused")
    with static_server({"/fhir/Binary/xr1": (dicom, "application/dicom")}) as (origin, seen):
        url = "Binary/xr1" if relative else f"{origin}/fhir/Binary/xr1"
        body, _ = _xray_by_url(patient, url)
        resp = client.post(PV, json=_with_fhir_server(body, f"{origin}/fhir"))
    assert resp.status_code == 200, resp.text
    assert seen.requests == [("/fhir/Binary/xr1", f"Bearer {TOKEN}")]
    cards = resp.json()["cards"]
    assert cards and "IMAGE" in cards[0]["extension"]["org.moe-health.explanation"][
        "modalitiesUsed"
    ]
    assert "IMAGE" in audit_rows(client, body["hookInstance"])[0].modalities["used"]


def test_xray_url_outside_fhir_server_is_never_fetched(
    client: TestClient, demo_patients: list[dict[str, Any]]
) -> None:
    patient = _patient(demo_patients, "E+I")
    _, dicom = _xray_by_url(patient, "unused")
    routes = {"/fhir/Binary/xr1": (dicom, "application/dicom")}
    with static_server(routes) as (ehr, ehr_seen), static_server(routes) as (other, other_seen):
        body, _ = _xray_by_url(patient, f"{other}/fhir/Binary/xr1")
        resp = client.post(PV, json=_with_fhir_server(body, f"{ehr}/fhir"))
    assert resp.status_code == 200, resp.text
    assert other_seen.requests == [] and ehr_seen.requests == []  # the token went nowhere
    card = resp.json()["cards"][0]
    assert "IMAGE" not in card["extension"]["org.moe-health.explanation"]["modalitiesUsed"]
    assert "outside fhirServer" in card["detail"]


@pytest.mark.parametrize(
    ("url", "owned"),
    [
        ("Binary/1", True),
        ("https://ehr.example.org/fhir/Binary/1", True),
        ("https://ehr.example.org/fhirx/Binary/1", False),
        ("https://ehr.example.org/other/Binary/1", False),
        ("Binary/../../admin", False),
        ("Binary/%2e%2e/%2e%2e/admin", False),
        ("https://elsewhere.example.com/fhir/Binary/1", False),
        ("//elsewhere.example.com/fhir/Binary/1", False),
    ],
)
def test_resolver_only_owns_urls_under_fhir_server(url: str, owned: bool) -> None:
    resolver = FhirBinaryResolver("https://ehr.example.org/fhir", TOKEN, 1.0)
    try:
        assert resolver.owns(url) is owned
    finally:
        resolver.close()


# --- prediction timeout ---------------------------------------------------------------------


class _SlowPredictor:
    """Wraps the real predictor; sleeps ``delays[i]`` before call ``i`` and records spans."""

    def __init__(self, inner: Any, delays: Sequence[float]) -> None:
        self.inner = inner
        self.meta = inner.meta
        self.delays = list(delays)
        self.spans: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def predict(self, records: Sequence[Any]) -> list[Any]:
        with self._lock:
            delay = self.delays.pop(0) if self.delays else 0.0
        start = time.monotonic()
        time.sleep(delay)
        out: list[Any] = self.inner.predict(records)
        with self._lock:
            self.spans.append((start, time.monotonic()))
        return out


def test_prediction_timeout_answers_at_once_and_holds_the_model_until_the_thread_ends(
    tmp_path: Path, demo_model: ModelService, demo_patients: list[dict[str, Any]]
) -> None:
    slow = _SlowPredictor(demo_model.predictor, delays=[2.0])
    model = dataclasses.replace(demo_model, predictor=slow)
    settings = make_settings(tmp_path, request_timeout_s=0.6)
    patient = _patient(demo_patients, "E")
    with TestClient(create_app(settings, model)) as client:
        t0 = time.monotonic()
        first = client.post(PV, json=hook_body(patient, hookInstance="slow-1"))
        first_s = time.monotonic() - t0
        assert first.status_code == 503, first.text
        assert first_s < 1.7  # the timeout is honoured, not the thread's 2 s
        second = client.post(PV, json=hook_body(patient, hookInstance="slow-2"))
        assert second.status_code == 200, second.text
    assert len(slow.spans) == 2, "call 2 ended while the timed-out call 1 was still running"
    (_, first_end), (second_start, _) = sorted(slow.spans)
    assert second_start >= first_end  # never two model calls at once
