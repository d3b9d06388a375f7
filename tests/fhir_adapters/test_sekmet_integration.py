"""Against a real sekmet-fhir server: load Synthea bundles, fetch over REST, Bulk export
with SMART Backend Services auth, and get the same records as reading the bundles."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fhir_adapters.bulk import BulkDataClient
from fhir_adapters.client import FhirAuthError, FhirClient
from fhir_adapters.ndjson import NdjsonReport, records_from_ndjson
from fhir_adapters.record import build_records
from fhir_adapters.references import reference_id
from fhir_adapters.smart_auth import SmartBackendAuth, discover_token_endpoint
from moe_core.records import PatientRecord
from tests.servers import start_sekmet

pytestmark = pytest.mark.integration

TOKEN = "integration-token"
CLIENT_ID = "moe-health-bulk"
N_BUNDLES = 12  # enough patients for several pages and files, fast on 2 cores


def _content(r: PatientRecord) -> tuple[Any, ...]:
    """A record without server-assigned ids (a transaction POST gives new ids)."""
    return (r.anchor_time, r.prediction_time, r.static, tuple(r.events), tuple(r.notes),
            r.labels, r.discharge_time, r.death_time, r.encounter_class)  # fmt: skip


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def loaded_server(
    tmp_path_factory: pytest.TempPathFactory, shared_data: Path, rsa_key: rsa.RSAPrivateKey
) -> Iterator[tuple[str, list[dict[str, Any]], list[str]]]:
    """sekmet with bearer + SMART auth, loaded with Synthea bundles; (base, bundles, pids)."""
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
    jwk.update({"alg": "RS384", "kid": "k1", "use": "sig"})
    smart: list[dict[str, object]] = [
        {"client_id": CLIENT_ID, "jwks": {"keys": [jwk]}, "scopes": "system/*.read"}
    ]
    tmp = tmp_path_factory.mktemp("sekmet")
    with start_sekmet(tmp, tokens=[TOKEN], smart_clients=smart) as base:
        bundles: list[dict[str, Any]] = []
        pids: list[str] = []
        with FhirClient(base, auth=TOKEN, timeout=120) as client:
            for path in sorted((shared_data / "synthea-r4").glob("*.json"))[:N_BUNDLES]:
                bundle = orjson.loads(path.read_bytes())
                response = client.transaction(bundle)
                patient_entry = next(
                    i for i, e in enumerate(bundle["entry"])
                    if e["resource"]["resourceType"] == "Patient"
                )  # fmt: skip
                location = response["entry"][patient_entry]["response"]["location"]
                pids.append(str(reference_id(location)))
                bundles.append(bundle)
        yield base, bundles, pids


def test_rest_fetch_gives_the_same_records_as_the_bundle(
    loaded_server: tuple[str, list[dict[str, Any]], list[str]],
) -> None:
    base, bundles, pids = loaded_server
    with FhirClient(base, auth=TOKEN, max_pages=50) as client:
        for bundle, pid in list(zip(bundles, pids, strict=True))[:4]:
            fetched = client.patient_resources(pid)
            assert fetched[0]["resourceType"] == "Patient" and fetched[0]["id"] == pid
            from_server = build_records(fetched, binary_resolver=client.binary)
            direct = build_records([e["resource"] for e in bundle["entry"]])
            assert from_server and [_content(r) for r in from_server] == [
                _content(r) for r in direct
            ]
            assert all(r.patient_id == pid for r in from_server)


def test_rest_without_token_is_refused(
    loaded_server: tuple[str, list[dict[str, Any]], list[str]],
) -> None:
    base, _, pids = loaded_server
    with FhirClient(base) as client, pytest.raises(FhirAuthError):
        client.read("Patient", pids[0])


def test_bulk_export_with_smart_auth_gives_the_same_records(
    loaded_server: tuple[str, list[dict[str, Any]], list[str]],
    rsa_key: rsa.RSAPrivateKey,
    tmp_path: Path,
) -> None:
    base, bundles, _ = loaded_server
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    auth = SmartBackendAuth(
        token_url=discover_token_endpoint(base), client_id=CLIENT_ID, private_key_pem=pem,
        scope="system/*.read", kid="k1",
    )  # fmt: skip
    types = ["Patient", "Encounter", "Observation", "DocumentReference", "DiagnosticReport"]
    with FhirClient(base, auth=auth, timeout=120) as client:
        bulk = BulkDataClient(client, min_poll=0.2, max_poll=2.0, timeout=300)
        manifest, paths = bulk.export(tmp_path / "export", types=types)
    assert auth.tokens_fetched == 1  # the token was cached across kick-off, polls, downloads
    assert {f.type for f in manifest.output} <= set(types) and paths
    report = NdjsonReport()
    exported = list(records_from_ndjson(tmp_path / "export", ndjson_report=report))
    assert report.corrupt == 0
    direct = [r for b in bundles for r in build_records([e["resource"] for e in b["entry"]])]
    assert sorted(map(repr, map(_content, exported))) == sorted(map(repr, map(_content, direct)))
    assert len(exported) >= N_BUNDLES
