"""Write-back Bundles: bounded, and a rejected Bundle is split to isolate the bad entry."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from fhir_adapters.client import FhirClient
from training.score.run_store import Chunk
from training.score.writeback import WriteBack


def _ras(n: int) -> list[dict[str, Any]]:
    return [
        {
            "resourceType": "RiskAssessment",
            "id": f"ra{i}",
            "subject": {"reference": f"Patient/p{i}"},
        }
        for i in range(n)
    ]


class _Server:
    """A MockTransport handler: records Bundles, refuses (422) those holding a bad id."""

    def __init__(self, bad: set[str]) -> None:
        self.bad = bad
        self.bundles: list[list[str]] = []
        self.stored: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        ids = [e["resource"]["id"] for e in orjson.loads(request.content)["entry"]]
        self.bundles.append(ids)
        if self.bad & set(ids):
            return httpx.Response(422, json={"resourceType": "OperationOutcome", "issue": []})
        self.stored.update(ids)
        return httpx.Response(200, json={"resourceType": "Bundle", "type": "transaction-response"})


def _client(server: _Server) -> FhirClient:
    return FhirClient("http://fhir.test/fhir", transport=httpx.MockTransport(server))


def test_more_ras_than_the_batch_bound_go_in_several_bundles() -> None:
    server = _Server(bad=set())
    chunk = Chunk(risk_assessments=_ras(5))
    wb = WriteBack(_client(server), batch_size=2)
    wb(chunk)
    assert [len(b) for b in server.bundles] == [2, 2, 1]
    assert wb.written == 5 and wb.bundles == 3 and not chunk.write_back_failed


def test_a_rejected_bundle_is_split_until_the_bad_entry_is_isolated() -> None:
    server = _Server(bad={"ra5"})
    chunk = Chunk(risk_assessments=_ras(8))
    wb = WriteBack(_client(server), batch_size=8)
    wb(chunk)
    assert [f.id for f in chunk.write_back_failed] == ["ra5"]
    assert chunk.write_back_failed[0].patient_id == "p5"
    assert server.stored == {f"ra{i}" for i in range(8)} - {"ra5"}
    assert wb.written == 7
    assert len(server.bundles) <= 1 + wb.max_split_requests


def test_splitting_is_bounded_when_everything_is_rejected() -> None:
    ras = _ras(64)
    server = _Server(bad={r["id"] for r in ras})
    wb = WriteBack(_client(server), batch_size=64, max_split_requests=6)
    failures = wb.send(ras)
    assert len(failures) == 64 and not server.stored
    assert len(server.bundles) <= 1 + 6
