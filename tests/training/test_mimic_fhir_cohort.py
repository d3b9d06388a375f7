"""``build-cohort --fhir-ndjson``: a Bulk export into the cohort format, exclusions counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from training.cohort_store import read_records, read_summary
from training.fhir_cohort import build_fhir_cohort


def _patient(pid: str, born: str, deceased: str | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Patient", "id": pid, "gender": "female",
                           "birthDate": born}  # fmt: skip
    if deceased:
        res["deceasedDateTime"] = deceased
    return res


def _encounter(eid: str, pid: str, start: str, end: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter", "id": eid, "status": "finished",
        "class": {"code": "IMP"}, "subject": {"reference": f"Patient/{pid}"},
        "period": {"start": start, "end": end},
    }  # fmt: skip


def _hr(oid: str, pid: str, when: str, value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation", "id": oid, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when,
        "valueQuantity": {"value": value, "code": "/min"},
    }  # fmt: skip


def _write(folder: Path, resources: list[dict[str, Any]]) -> None:
    folder.mkdir()
    (folder / "export.ndjson").write_bytes(b"\n".join(orjson.dumps(r) for r in resources))


def test_fhir_export_becomes_cohort_with_counted_exclusions(tmp_path: Path) -> None:
    _write(
        tmp_path / "ndjson",
        [
            _patient("a", "1950-01-01", "2020-01-06T10:00:00Z"),
            _encounter("a1", "a", "2020-01-01T00:00:00Z", "2020-01-06T10:00:00Z"),  # dies day 5
            _hr("o1", "a", "2020-01-01T03:00:00Z", 88),
            _hr("o2", "a", "2020-01-03T01:00:00Z", 99),  # after prediction time
            _patient("b", "2010-01-01"),
            _encounter("b1", "b", "2020-02-01T00:00:00Z", "2020-02-10T00:00:00Z"),  # a child
            _patient("c", "1960-01-01"),
            _encounter("c1", "c", "2020-03-01T00:00:00Z", "2020-03-02T00:00:00Z"),  # 24 h stay
        ],
    )
    summary = build_fhir_cohort(tmp_path / "ndjson", tmp_path / "cohort", seed=1)
    steps = [(s["count"], s["removed"]) for s in summary["steps"]]
    assert steps == [(3, 0), (2, 1), (2, 0), (1, 1)]
    (rec,) = read_records(tmp_path / "cohort")
    assert rec.encounter_id == "a1"
    assert [e.value for e in rec.events] == [88.0]
    assert rec.labels.mortality is True and rec.labels.readmission is None
    assert read_summary(tmp_path / "cohort")["steps"] == summary["steps"]
