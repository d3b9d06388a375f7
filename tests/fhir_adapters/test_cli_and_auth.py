"""The fhir-records command and SMART Backend Services token handling."""

from __future__ import annotations

from pathlib import Path

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from fhir_adapters.client import FhirClient
from fhir_adapters.smart_auth import ASSERTION_TYPE, SmartBackendAuth
from moe_health.cli import app
from tests.fhir_adapters.fhir_fixtures import encounter, observation, patient

TOKEN_URL = "http://auth.test/token"


def test_fhir_records_command_summarises_an_export(tmp_path: Path) -> None:
    lines = [patient(), encounter(), observation("t", "8310-5", 1, 98.6, "[degF]")]
    (tmp_path / "All.ndjson").write_bytes(b"\n".join(orjson.dumps(r) for r in lines))
    out = tmp_path / "summary.jsonl"
    result = CliRunner().invoke(app, ["fhir-records", "--ndjson", str(tmp_path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    summary = orjson.loads(out.read_bytes().splitlines()[0])
    assert summary["events"] == {"temperature": 1} and summary["present"] == "E"


def test_smart_auth_signs_es384_caches_the_token_and_refreshes_on_401() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())  # fmt: skip
    issued: list[str] = []
    state = {"reject_next": False}

    def handler(request: httpx.Request) -> httpx.Response:
        if str(request.url) == TOKEN_URL:
            form = dict(x.split("=", 1) for x in request.content.decode().split("&"))
            assert form["client_assertion_type"] == ASSERTION_TYPE.replace(":", "%3A")
            claims = jwt.decode(form["client_assertion"], key.public_key(), algorithms=["ES384"],
                                audience=TOKEN_URL)  # fmt: skip
            assert claims["iss"] == claims["sub"] == "cid" and claims["exp"] - claims["iat"] <= 300
            issued.append(f"t{len(issued)}")
            return httpx.Response(200, json={"access_token": issued[-1], "expires_in": 300})
        if state["reject_next"]:
            state["reject_next"] = False
            return httpx.Response(401)
        return httpx.Response(200, json={"resourceType": "Patient", "id": "p",
                                         "token": request.headers["authorization"]})  # fmt: skip

    auth = SmartBackendAuth(token_url=TOKEN_URL, client_id="cid", private_key_pem=pem)
    assert auth.alg == "ES384"
    client = FhirClient("http://fhir.test/fhir", auth=auth, transport=httpx.MockTransport(handler))
    assert client.read("Patient", "p")["token"] == "Bearer t0"
    assert client.read("Patient", "p")["token"] == "Bearer t0"  # cached
    state["reject_next"] = True
    assert client.read("Patient", "p")["token"] == "Bearer t1"  # refreshed after a 401
    assert issued == ["t0", "t1"]
