"""Prefetch missing: the service fetches from a real sekmet-fhir server with the bearer token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from cds_hooks.main import create_app
from cds_hooks.model_service import ModelService
from fhir_adapters.client import FhirClient
from fhir_adapters.record import build_records
from fhir_adapters.references import reference_id
from tests.cds_hooks.card_spec import assert_valid_card
from tests.cds_hooks.conftest import audit_rows, make_settings
from tests.servers import start_sekmet

pytestmark = pytest.mark.integration

TOKEN = "cds-hooks-token"
PV = "/cds-services/patient-view"


def _bundle_with_charted_admission(shared_data: Path) -> tuple[dict[str, Any], int]:
    """The first Synthea bundle whose latest inpatient admission has vitals/labs in its
    first 48 h, and the entry index of that Encounter."""
    for path in sorted((shared_data / "synthea-r4").glob("*.json")):
        bundle = orjson.loads(path.read_bytes())
        records = build_records([e["resource"] for e in bundle["entry"]])
        if records and records[-1].events:
            wanted = records[-1].encounter_id
            for i, e in enumerate(bundle["entry"]):
                if e["resource"]["resourceType"] == "Encounter" and e["resource"]["id"] == wanted:
                    return bundle, i
    raise AssertionError("no Synthea bundle with a charted inpatient admission")


@pytest.fixture(scope="module")
def synthea_server(
    tmp_path_factory: pytest.TempPathFactory, shared_data: Path
) -> Iterator[tuple[str, str, str]]:
    """sekmet (bearer auth) holding one Synthea patient; (base, patient id, inpatient encounter)."""
    tmp = tmp_path_factory.mktemp("sekmet-cds")
    with start_sekmet(tmp, tokens=[TOKEN]) as base:
        bundle, enc_index = _bundle_with_charted_admission(shared_data)
        with FhirClient(base, auth=TOKEN, timeout=120) as client:
            response = client.transaction(bundle)
        locations = [str(reference_id(e["response"]["location"])) for e in response["entry"]]
        kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
        yield base, locations[kinds.index("Patient")], locations[enc_index]


def _body(base: str, pid: str, eid: str | None, token: str) -> dict[str, Any]:
    context = {"userId": "Practitioner/x", "patientId": pid}
    if eid:
        context["encounterId"] = eid
    return {
        "hook": "patient-view",
        "hookInstance": f"sekmet-{pid}-{eid}-{token}",
        "fhirServer": base,
        "fhirAuthorization": {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "user/*.read",
            "subject": "moe-health",
        },
        "context": context,
    }


@pytest.mark.parametrize("with_encounter", [True, False], ids=["encounterId", "latest-inpatient"])
def test_missing_prefetch_is_fetched_from_the_fhir_server(
    synthea_server: tuple[str, str, str],
    tmp_path: Path,
    with_encounter: bool,
    demo_model: ModelService,
) -> None:
    base, pid, eid = synthea_server
    with TestClient(create_app(make_settings(tmp_path), demo_model)) as client:
        resp = client.post(PV, json=_body(base, pid, eid if with_encounter else None, TOKEN))
        assert resp.status_code == 200, resp.text
        for card in resp.json()["cards"]:
            assert_valid_card(card)
        audit = audit_rows(client)
        assert set(audit[0].modalities["sources"].values()) == {"fhirServer"}
        assert "EHR" in audit[0].modalities["used"] and audit[0].abstain_reason is None


def test_fhir_server_refusing_the_token_is_412(
    synthea_server: tuple[str, str, str], tmp_path: Path, demo_model: ModelService
) -> None:
    base, pid, eid = synthea_server
    with TestClient(create_app(make_settings(tmp_path), demo_model)) as client:
        resp = client.post(PV, json=_body(base, pid, eid, "wrong-token"))
        assert resp.status_code == 412
        assert "401" in resp.json()["issue"][0]["diagnostics"]
