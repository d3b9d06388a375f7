"""The streaming NDJSON reader: grouping, gzip, corrupt lines, spilling to disk."""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Sequence
from pathlib import Path

import orjson

from fhir_adapters.ndjson import NdjsonReport, group_by_patient, records_from_ndjson
from fhir_adapters.record import build_records
from tests.fhir_adapters.fhir_fixtures import document, encounter, observation, patient


def _write(path: Path, resources: Sequence[object], extra: Sequence[bytes] = ()) -> None:
    lines = [orjson.dumps(r) for r in resources] + list(extra)
    data = b"\n".join(lines) + b"\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def _export(tmp_path: Path) -> Path:
    out = tmp_path / "export"
    out.mkdir()
    _write(out / "Patient.ndjson", [patient("p1"), patient("p2")])
    _write(out / "Encounter.ndjson.gz", [encounter("e1", "p1"), encounter("e2", "p2")])
    obs = [observation(f"o{i}", "8867-4", i, 70.0 + i, "/min", pid=f"p{1 + i % 2}")
           for i in range(10)]  # fmt: skip
    _write(out / "Observation.ndjson", obs, [b"{not json", b'{"no": "type"}'])
    _write(out / "Claim.ndjson", [{"resourceType": "Claim", "id": "c", "patient":
                                  {"reference": "Patient/p1"}}])  # fmt: skip
    _write(out / "DocumentReference.ndjson", [document("d1", 1, "note one", pid="p2")])
    return out


def test_groups_by_patient_and_counts_bad_lines(tmp_path: Path) -> None:
    report = NdjsonReport()
    groups = dict(group_by_patient(_export(tmp_path), report=report))
    assert sorted(groups) == ["p1", "p2"]
    assert {r["resourceType"] for r in groups["p2"]} == {
        "Patient", "Encounter", "Observation", "DocumentReference"}  # fmt: skip
    assert report.corrupt == 1 and report.not_resources == 1
    assert report.skipped_types["Claim"] == 1
    assert report.kept["Observation"] == 10
    assert not report.spilled


def test_spilling_to_sqlite_gives_the_same_groups(tmp_path: Path) -> None:
    export = _export(tmp_path)
    in_memory = dict(group_by_patient(export))
    report = NdjsonReport()
    spilled = dict(group_by_patient(export, spill_bytes=100, report=report))
    assert report.spilled
    assert spilled == in_memory


def test_ndjson_records_match_reading_the_resources_directly(tmp_path: Path) -> None:
    export = _export(tmp_path)
    streamed = list(records_from_ndjson(export))
    resources = [r for _, rs in group_by_patient(export) for r in rs]
    direct = build_records(resources)
    assert [(r.patient_id, r.events, r.notes) for r in streamed] == [
        (r.patient_id, r.events, r.notes) for r in direct
    ]
    assert len(streamed) == 2 and streamed[1].notes[0].text == "note one"


def test_synthea_bulk_document_references_become_notes(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "synthea-bulk-10"
    export = tmp_path / "bulk"
    export.mkdir()
    for name in ("Patient.000.ndjson", "Encounter.000.ndjson", "DocumentReference.000.ndjson"):
        shutil.copy(src / name, export / name)
    # the same export gzipped must read the same
    gz = tmp_path / "bulkgz"
    gz.mkdir()
    for p in export.iterdir():
        (gz / (p.name + ".gz")).write_bytes(gzip.compress(p.read_bytes()))
    report = NdjsonReport()
    records = list(records_from_ndjson(export, ndjson_report=report))
    assert report.corrupt == 0 and report.kept["DocumentReference"] == 1215
    assert len(records) > 10
    with_notes = [r for r in records if r.notes]
    assert len(with_notes) >= len(records) // 2
    for r in with_notes:
        for n in r.notes:
            assert r.anchor_time <= n.time < r.prediction_time
            assert n.text.strip() and "[**" not in n.text
    again = list(records_from_ndjson(gz))
    assert [(r.encounter_id, r.notes) for r in again] == [
        (r.encounter_id, r.notes) for r in records
    ]
