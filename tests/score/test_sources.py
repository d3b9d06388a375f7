"""Bulk NDJSON on disk -> one group per patient; bad lines are reported, not fatal."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson

from training.score import keys
from training.score.pipeline import Failure, PatientGroup
from training.score.sources import ndjson_files, spill_groups


def _write(path: Path, resources: list[object], extra: bytes = b"") -> None:
    data = b"".join(orjson.dumps(r) + b"\n" for r in resources) + extra
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def _export(tmp_path: Path) -> Path:
    _write(
        tmp_path / "Patient.ndjson",
        [{"resourceType": "Patient", "id": p} for p in ("p1", "p2", "p3")],
    )
    obs = [
        {
            "resourceType": "Observation",
            "id": f"o{i}",
            "subject": {"reference": f"Patient/p{i % 3 + 1}"},
        }
        for i in range(9)
    ]
    _write(tmp_path / "Observation.ndjson.gz", obs, b"{not json\n")
    _write(
        tmp_path / "Other.ndjson",
        [
            {"resourceType": "Frobnication", "id": "x"},
            {"resourceType": "Claim", "id": "c", "patient": {"reference": "Patient/p1"}},
            {"resourceType": "Observation", "id": "orphan"},
        ],
    )
    return tmp_path


def _run(folder: Path, **kw: object) -> tuple[list[PatientGroup], list[Failure]]:
    items = list(spill_groups(ndjson_files(folder), partitions=4, **kw))  # type: ignore[arg-type]
    return (
        [i for i in items if isinstance(i, PatientGroup)],
        [i for i in items if isinstance(i, Failure)],
    )


def test_gzip_and_plain_files_group_by_patient(tmp_path: Path) -> None:
    groups, _ = _run(_export(tmp_path))
    by_pid = {g.patient_id: g for g in groups}
    assert sorted(by_pid) == ["p1", "p2", "p3"]
    assert [r["resourceType"] for r in by_pid["p1"].resources] == ["Observation"] * 3 + ["Patient"]


def test_corrupt_line_is_reported_with_its_location(tmp_path: Path) -> None:
    _, failures = _run(_export(tmp_path))
    bad = [f for f in failures if f.reason == keys.REASON_BAD_RESOURCE]
    assert [f.source for f in bad] == ["Observation.ndjson.gz:10"]


def test_unknown_resource_type_is_reported_and_known_unused_type_skipped(tmp_path: Path) -> None:
    _, failures = _run(_export(tmp_path))
    unknown = [f for f in failures if f.reason == keys.REASON_UNKNOWN_TYPE]
    assert [f.source for f in unknown] == ["Other.ndjson:1"]
    assert "Frobnication" in unknown[0].detail
    assert [f.source for f in failures if f.reason == keys.REASON_NO_PATIENT] == ["Other.ndjson:3"]


def test_skipped_patients_are_not_grouped(tmp_path: Path) -> None:
    groups, _ = _run(_export(tmp_path), skip={"p2"})
    assert sorted(g.patient_id for g in groups) == ["p1", "p3"]


def test_spilling_to_disk_gives_the_same_groups(tmp_path: Path) -> None:
    folder = _export(tmp_path)
    in_memory, _ = _run(folder)
    spilled, failures = _run(folder, memory_bytes=0)
    assert sorted((g.patient_id, g.resources) for g in spilled) == sorted(  # type: ignore[type-var]
        (g.patient_id, g.resources) for g in in_memory
    )
    assert len(failures) == 3
