"""The streaming NDJSON reader: grouping, gzip, corrupt lines, spilling to disk."""

from __future__ import annotations

import gzip
import shutil
import tracemalloc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from fhir_adapters.ndjson import NdjsonReport, group_by_patient, records_from_ndjson
from fhir_adapters.record import build_records
from moe_core.records import ImageRef, QualityNote
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


class _RecordingImageSource:
    """An image source that records what ``related`` resources it was handed."""

    def __init__(self) -> None:
        self.related: list[list[str]] = []

    def images_for(
        self, study: Mapping[str, Any], related: Sequence[Mapping[str, Any]]
    ) -> tuple[list[ImageRef], list[QualityNote]]:
        self.related.append([f"{r['resourceType']}/{r['id']}" for r in related])
        return [], []


def test_endpoint_resources_reach_the_image_source(tmp_path: Path) -> None:
    from fhir_adapters.imaging.dicomweb import endpoint_address

    out = tmp_path / "export"
    out.mkdir()
    study = {"resourceType": "ImagingStudy", "id": "s1", "status": "available",
             "subject": {"reference": "Patient/p1"}, "started": "2150-03-01T10:00:00Z",
             "endpoint": [{"reference": "Endpoint/pacs"}]}  # fmt: skip
    endpoint = {"resourceType": "Endpoint", "id": "pacs", "status": "active",
                "address": "http://pacs.test/dicom-web"}  # fmt: skip
    _write(out / "Patient.ndjson", [patient("p1")])
    _write(out / "Encounter.ndjson", [encounter("e1", "p1")])
    _write(out / "ImagingStudy.ndjson", [study])
    _write(out / "Endpoint.ndjson", [endpoint])
    source = _RecordingImageSource()
    report = NdjsonReport()
    (rec,) = records_from_ndjson(out, ndjson_report=report, image_source=source)
    assert rec.encounter_id == "e1"
    assert source.related == [["Endpoint/pacs"]]
    assert endpoint_address(study, [endpoint]) == "http://pacs.test/dicom-web"
    assert report.kept["Endpoint"] == 1 and not report.no_patient


def test_streaming_reader_memory_stays_bounded(tmp_path: Path) -> None:
    """Python heap peak while grouping an export ~40x the spill bound stays near the bound."""
    out = tmp_path / "big"
    out.mkdir()
    padding = "x" * 400
    n_patients, per_patient = 2_000, 10
    with (out / "Observation.ndjson").open("wb") as fh:
        for k in range(per_patient):  # patient-interleaved, as a real export is
            for p in range(n_patients):
                obs = observation(f"o{p}-{k}", "8867-4", k, 70.0, "/min", pid=f"p{p:05d}",
                                  note=[{"text": padding}])  # fmt: skip
                fh.write(orjson.dumps(obs) + b"\n")
    size = (out / "Observation.ndjson").stat().st_size
    spill = 256 * 1024
    assert size > 40 * spill
    report = NdjsonReport()
    groups = 0
    tracemalloc.start()
    try:
        for _pid, resources in group_by_patient(out, spill_bytes=spill, report=report):
            assert len(resources) == per_patient
            groups += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert groups == n_patients and report.spilled
    # The spill buffer, one SQLite insert batch (both <= spill bytes, ~3x as Python
    # objects), one patient's parsed resources and interpreter noise -- not the export.
    assert peak < 8 * spill, f"peak {peak:,} B for a {size:,} B export"
