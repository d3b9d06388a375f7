"""The CDS Hooks service end to end (in-process, with its lifespan and the demo model)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_hooks.cards import indicator_for
from cds_hooks.config import Settings, default_model_path
from cds_hooks.main import create_app
from cds_hooks.model_service import ModelService
from moe_core.inference import ABSTAIN_NO_MODALITY
from moe_core.modalities import AVAILABILITY_PATTERNS, Modality, pattern_name
from tests.cds_hooks.card_spec import assert_valid_card
from tests.cds_hooks.conftest import audit_rows, hook_body, make_settings
from tests.cds_hooks.http_fixtures import silent_server
from tests.conftest import free_port

PV = "/cds-services/patient-view"


def _patient(demo_patients: list[dict[str, Any]], pattern: str) -> dict[str, Any]:
    return next(p for p in demo_patients if p["pattern"] == pattern)


def test_discovery_lists_both_services_with_prefetch(client: TestClient) -> None:
    body = client.get("/cds-services").json()
    services = {s["id"]: s for s in body["services"]}
    assert set(services) == {"patient-view", "encounter-discharge"}
    for s in services.values():
        assert s["hook"] == s["id"] and s["description"] and s["title"]
        assert set(s["prefetch"]) == {
            "patient",
            "encounter",
            "observations",
            "documents",
            "imaging",
        }
        assert s["prefetch"]["patient"] == "Patient/{{context.patientId}}"
        assert "date=ge{{today() - 30 days}}" in s["prefetch"]["observations"]
    assert services["encounter-discharge"]["prefetch"]["encounter"] == (
        "Encounter/{{context.encounterId}}"
    )


def test_full_call_with_prefetch_gives_one_valid_card_per_task(
    client: TestClient, demo_patients: list[dict[str, Any]]
) -> None:
    resp = client.post(PV, json=hook_body(_patient(demo_patients, "E+T+I")))
    assert resp.status_code == 200, resp.text
    cards = resp.json()["cards"]
    assert len(cards) == 3
    for card in cards:
        assert_valid_card(card)
        assert card["source"]["url"] == "http://127.0.0.1:8080/model-card"
        assert card["suggestions"][0]["actions"][0]["resource"]["resourceType"] == "RiskAssessment"
    assert "systemActions" not in resp.json()


@pytest.mark.parametrize("pattern", [pattern_name(p) for p in AVAILABILITY_PATTERNS])
def test_each_availability_pattern(
    client: TestClient, demo_patients: list[dict[str, Any]], pattern: str
) -> None:
    """Every pattern has at least one usable modality, so the model must not abstain:
    one card per task, naming exactly the pattern's modalities as used."""
    patient = _patient(demo_patients, pattern)
    resp = client.post(PV, json=hook_body(patient))
    assert resp.status_code == 200, resp.text
    cards = resp.json()["cards"]
    assert len(cards) == 3, f"{pattern}: expected one card per task, got {len(cards)}"
    for card in cards:
        assert_valid_card(card)
    audit = audit_rows(client, f"hi-{patient['id']}-patient-view")
    assert len(audit) == 1
    assert audit[0].abstain_reason is None
    letters = {"EHR": "E", "TEXT": "T", "IMAGE": "I"}
    for card in cards:
        explanation = card["extension"]["org.moe-health.explanation"]
        assert set(explanation["modalitiesUsed"]) == set(audit[0].modalities["used"])
        assert "+".join(letters[m] for m in explanation["modalitiesUsed"]) == pattern


def test_no_usable_data_abstains_with_empty_cards_and_a_logged_reason(
    client: TestClient, demo_patients: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    body = hook_body(_patient(demo_patients, "E+T+I"), hookInstance="abstain-check")
    body["prefetch"]["observations"] = {"resourceType": "Bundle", "type": "searchset"}
    body["prefetch"]["documents"] = None  # the spec's "no data for this template"
    body["prefetch"]["imaging"] = None
    with caplog.at_level(logging.INFO, logger="moe_health.cds"):
        resp = client.post(PV, json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"cards": []}
    abstained = [r for r in caplog.records if r.getMessage() == "model_abstained"]
    assert len(abstained) == 1
    fields: dict[str, Any] = getattr(abstained[0], "fields", {})
    assert fields["reason"] == ABSTAIN_NO_MODALITY and fields["hook_instance"] == "abstain-check"
    assert audit_rows(client, "abstain-check")[0].abstain_reason == ABSTAIN_NO_MODALITY


def _trained_modalities_from_config() -> set[str]:
    """Modalities of the demo checkpoint's training combinations, read from its files."""
    config = json.loads((default_model_path() / "config.json").read_text())
    combos = config["model_config"]["moe"]["combinations"]
    return {m.name for m in Modality if any(c[int(m)] for c in combos)}


def test_card_names_training_combinations_when_a_used_modality_was_never_trained(
    client: TestClient, demo_patients: list[dict[str, Any]]
) -> None:
    cards = client.post(PV, json=hook_body(_patient(demo_patients, "E+T+I"))).json()["cards"]
    assert cards
    untrained = {"EHR", "TEXT", "IMAGE"} - _trained_modalities_from_config()
    for card in cards:
        noted = "not part of any data combination this model was trained with" in card["detail"]
        assert noted == bool(untrained), card["detail"]
        if "IMAGE" in untrained:
            assert "chest X-ray was not part of any" in card["detail"]


def test_chunked_body_over_the_limit_is_413(tmp_path: Any, demo_model: ModelService) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: sent as Transfer-Encoding: chunked
        yield b'{"hook": "patient-view", "pad": "'
        for _ in range(8):
            yield b"x" * 1024
        yield b'"}'

    s = make_settings(tmp_path, max_request_bytes=2048)
    with TestClient(create_app(s, demo_model)) as c:
        resp = c.post(PV, content=chunks(), headers={"content-type": "application/json"})
        assert "content-length" not in resp.request.headers
        assert resp.status_code == 413, resp.text
        outcome = resp.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert "exceeds the limit of 2048 bytes" in outcome["issue"][0]["diagnostics"]


def test_chunked_body_under_the_limit_is_served(
    client: TestClient, demo_patients: list[dict[str, Any]]
) -> None:
    payload = json.dumps(hook_body(_patient(demo_patients, "E"))).encode()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(payload), 4096):
            yield payload[i : i + 4096]

    resp = client.post(PV, content=chunks(), headers={"content-type": "application/json"})
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["cards"]) == 3


def test_thresholds_from_env_json_reach_the_card_indicator(
    tmp_path: Any,
    demo_model: ModelService,
    demo_patients: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "MOE_HEALTH_THRESHOLDS",
        json.dumps(
            {
                "mortality": {"warning": 0.0, "critical": 0.0},
                "long_los": {"warning": 1.0, "critical": 1.0},
            }
        ),
    )
    s = make_settings(tmp_path)
    assert s.thresholds["mortality"].critical == 0.0  # read from the environment
    with TestClient(create_app(s, demo_model)) as c:
        cards = c.post(PV, json=hook_body(_patient(demo_patients, "E+T"))).json()["cards"]
    by_task = {card["source"]["topic"]["code"]: card for card in cards}
    assert by_task["mortality"]["indicator"] == "critical"
    long_los = by_task["long_los"]
    assert long_los["extension"]["org.moe-health.explanation"]["risk"] < 1.0
    assert long_los["indicator"] == "info"
    assert "warning at >99%" in long_los["detail"]
    readmission = by_task["readmission"]  # not in the JSON: keeps its default thresholds
    risk = readmission["extension"]["org.moe-health.explanation"]["risk"]
    assert readmission["indicator"] == indicator_for(risk, Settings().thresholds["readmission"])


@pytest.mark.parametrize(
    "limits",
    [
        {"fhir_read_timeout_s": 0.3, "fhir_total_timeout_s": 20.0},
        {"fhir_read_timeout_s": 10.0, "fhir_total_timeout_s": 0.5},
    ],
    ids=["read-timeout", "total-timeout"],
)
def test_slow_fhir_server_is_412_not_500(
    tmp_path: Any,
    demo_model: ModelService,
    demo_patients: list[dict[str, Any]],
    limits: dict[str, float],
) -> None:
    body = hook_body(_patient(demo_patients, "E"))
    del body["prefetch"]
    with silent_server() as origin:
        body["fhirServer"] = f"{origin}/fhir"
        s = make_settings(tmp_path, fhir_connect_timeout_s=1.0, **limits)
        with TestClient(create_app(s, demo_model)) as c:
            t0 = time.monotonic()
            resp = c.post(PV, json=body)
            elapsed = time.monotonic() - t0
    assert resp.status_code == 412, resp.text
    text = resp.json()["issue"][0]["diagnostics"]
    assert "timed out" in text or "within" in text
    assert elapsed < 5.0


def test_discharge_hook_puts_readmission_first(
    client: TestClient, demo_patients: list[dict[str, Any]]
) -> None:
    body = hook_body(_patient(demo_patients, "E+T"), hook="encounter-discharge")
    resp = client.post("/cds-services/encounter-discharge", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["cards"][0]["source"]["topic"]["code"] == "readmission"


def test_writeback_extension_returns_system_actions(
    client: TestClient, demo_patients: list[dict[str, Any]]
) -> None:
    body = hook_body(_patient(demo_patients, "E"), extension={"org.moe-health.writeback": True})
    actions = client.post(PV, json=body).json()["systemActions"]
    assert actions and all(a["type"] == "create" for a in actions)
    assert all(a["resource"]["subject"]["reference"].startswith("Patient/") for a in actions)


def test_malformed_json_is_400_with_a_clear_message(client: TestClient) -> None:
    resp = client.post(
        PV, content=b'{"hook": "patient-view", ', headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400
    assert "malformed JSON" in resp.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda b: b.pop("hookInstance"), "hookInstance"),
        (lambda b: b.pop("context"), "context"),
        (lambda b: b["context"].pop("patientId"), "patientId"),
        (lambda b: b.update(hook="order-sign"), "answers hook"),
        (
            lambda b: b.update(
                fhirAuthorization={
                    "access_token": "t",
                    "token_type": "Bearer",
                    "expires_in": 60,
                    "scope": "s",
                    "subject": "x",
                }
            ),
            "fhirServer is required",
        ),
        (lambda b: b["context"].update(patientId="../../etc/passwd"), "patientId"),
    ],
    ids=[
        "no-hookInstance",
        "no-context",
        "no-patientId",
        "wrong-hook",
        "token-without-server",
        "patientId-path-injection",
    ],
)
def test_invalid_requests_are_400(
    client: TestClient, demo_patients: list[dict[str, Any]], mutate: Any, needle: str
) -> None:
    body = hook_body(_patient(demo_patients, "E"))
    mutate(body)
    resp = client.post(PV, json=body)
    assert resp.status_code == 400, resp.text
    assert needle in resp.json()["issue"][0]["diagnostics"]


def test_discharge_without_encounter_id_is_400(
    client: TestClient, demo_patients: list[dict[str, Any]]
) -> None:
    body = hook_body(_patient(demo_patients, "E"), hook="encounter-discharge")
    del body["context"]["encounterId"]
    assert client.post("/cds-services/encounter-discharge", json=body).status_code == 400


def test_unknown_service_is_404(client: TestClient, demo_patients: list[dict[str, Any]]) -> None:
    body = hook_body(_patient(demo_patients, "E"))
    assert client.post("/cds-services/no-such-service", json=body).status_code == 404


def test_missing_prefetch_and_unreachable_fhir_server_is_412(
    client: TestClient, demo_patients: list[dict[str, Any]]
) -> None:
    body = hook_body(
        _patient(demo_patients, "E"), fhirServer=f"http://127.0.0.1:{free_port()}/fhir"
    )
    del body["prefetch"]
    resp = client.post(PV, json=body)
    assert resp.status_code == 412
    assert resp.json()["resourceType"] == "OperationOutcome"


def test_missing_prefetch_without_fhir_server_is_412(
    client: TestClient, demo_patients: list[dict[str, Any]]
) -> None:
    body = hook_body(_patient(demo_patients, "E"))
    del body["prefetch"]["observations"]
    assert client.post(PV, json=body).status_code == 412


def test_body_over_the_limit_is_413(tmp_path: Any, demo_model: ModelService) -> None:
    s = make_settings(tmp_path, max_request_bytes=2048)
    with TestClient(create_app(s, demo_model)) as c:
        resp = c.post(
            PV, content=b"{" + b" " * 4096 + b"}", headers={"content-type": "application/json"}
        )
        assert resp.status_code == 413


def test_feedback_is_stored_and_readable(
    client: TestClient, demo_patients: list[dict[str, Any]]
) -> None:
    cards = client.post(PV, json=hook_body(_patient(demo_patients, "E+T"))).json()["cards"]
    first, second = cards[0], cards[1]
    feedback = {
        "feedback": [
            {
                "card": first["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": first["suggestions"][0]["uuid"]}],
                "outcomeTimestamp": "2026-01-02T10:00:00Z",
            },
            {
                "card": second["uuid"],
                "outcome": "overridden",
                "overrideReason": {"reason": first["overrideReasons"][0], "userComment": "known"},
                "outcomeTimestamp": "2026-01-02T10:01:00Z",
            },
        ]
    }
    assert client.post(f"{PV}/feedback", json=feedback).status_code == 200
    stored = client.get(f"{PV}/feedback", params={"card": second["uuid"]}).json()
    assert len(stored) == 1 and stored[0]["outcome"] == "overridden"
    assert stored[0]["overrideReason"]["userComment"] == "known"
    assert len(client.get(f"{PV}/feedback").json()) == 2


def test_accepted_feedback_without_suggestions_is_400(client: TestClient) -> None:
    bad = {
        "feedback": [
            {"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-01-02T10:00:00Z"}
        ]
    }
    assert client.post(f"{PV}/feedback", json=bad).status_code == 400


def test_audit_log_survives_a_restart(
    settings: Settings, demo_patients: list[dict[str, Any]], demo_model: ModelService
) -> None:
    body = hook_body(_patient(demo_patients, "E+I"), hookInstance="restart-check")
    with TestClient(create_app(settings, demo_model)) as c:
        assert c.post(PV, json=body).status_code == 200
    with TestClient(create_app(settings, demo_model)) as c:
        rows = audit_rows(c, "restart-check")
        assert len(rows) == 1 and rows[0].risks and rows[0].latency_ms > 0
        assert len(rows[0].patient_key) == 32
        assert _patient(demo_patients, "E+I")["patientId"] not in rows[0].patient_key


def test_logs_carry_no_patient_identifier(
    client: TestClient, demo_patients: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    patient = _patient(demo_patients, "E+T+I")
    with caplog.at_level(logging.INFO, logger="moe_health.cds"):
        assert client.post(PV, json=hook_body(patient)).status_code == 200
    text = "\n".join(str(getattr(r, "fields", "")) + r.getMessage() for r in caplog.records)
    assert "prediction" in text
    assert patient["patientId"] not in text and patient["encounterId"] not in text


def test_health_readiness_docs_and_model_card(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "ok"
    assert "/cds-services/{service_id}" in client.get("/openapi.json").json()["paths"]
    card = client.get("/model-card.md").text
    assert "synthetic" in card.lower() and "not for clinical use" in card.lower()
    assert client.get("/demo").status_code == 200


# --- authentication at the HTTP edge ------------------------------------------------------


def test_call_without_jwt_is_401(auth_client: TestClient) -> None:
    resp = auth_client.get("/cds-services")
    assert resp.status_code == 401 and resp.headers["www-authenticate"].startswith("Bearer")


def test_call_with_valid_jwt_is_accepted_once(
    auth_client: TestClient, keys: Any, demo_patients: list[dict[str, Any]]
) -> None:
    token = keys.token("http://127.0.0.1:8080/cds-services/patient-view")
    headers = {"Authorization": f"Bearer {token}"}
    body = hook_body(_patient(demo_patients, "E"))
    assert auth_client.post(PV, json=body, headers=headers).status_code == 200
    replay = auth_client.post(PV, json=body, headers=headers)
    assert replay.status_code == 401 and "replay" in replay.text


def test_jwt_for_another_endpoint_is_401(auth_client: TestClient, keys: Any) -> None:
    token = keys.token("http://127.0.0.1:8080/cds-services/patient-view")
    resp = auth_client.get("/cds-services", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401 and "aud" in resp.text


def test_cors_preflight_allows_only_configured_origins(
    tmp_path: Any, demo_model: ModelService
) -> None:
    s = make_settings(tmp_path, cors_origins=["https://ehr.example.org"])
    with TestClient(create_app(s, demo_model)) as c:
        headers = {
            "Origin": "https://ehr.example.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        }
        ok = c.options(PV, headers=headers)
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://ehr.example.org"
        bad = c.options(PV, headers={**headers, "Origin": "https://evil.example.com"})
        assert "access-control-allow-origin" not in bad.headers


def test_startup_heap_is_frozen_out_of_the_collector(
    tmp_path: Any, demo_model: ModelService
) -> None:
    """The model and libraries loaded at startup leave the collector's reach, so full
    collections triggered by large prefetches do not rescan them (bench_cds.py)."""
    import gc

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    with TestClient(create_app(make_settings(tmp_path), demo_model)) as c:
        assert c.get("/readyz").status_code == 200
        assert gc.get_freeze_count() > 0
