"""Bulk NDJSON on disk -> one group per patient; bad lines are reported, not fatal."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import orjson

from training.score import keys
from training.score.fhir_r4 import R4_RESOURCE_TYPES
from training.score.pipeline import Failure, PatientGroup, RawPatientGroup
from training.score.sources import (
    PARSED_OVERHEAD,
    SpillStats,
    gc_paused,
    ndjson_files,
    parse_group,
    partition_count,
    spill_groups,
)


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


def _many_patients(folder: Path, n: int) -> Path:
    """``n`` patients with three observations each, spread over two files."""
    _write(
        folder / "Patient.ndjson", [{"resourceType": "Patient", "id": f"p{i}"} for i in range(n)]
    )
    obs = [
        {
            "resourceType": "Observation",
            "id": f"o{i}-{j}",
            "subject": {"reference": f"Patient/p{i}"},
            "valueQuantity": {"value": i + j / 10},
        }
        for i in range(n)
        for j in range(3)
    ]
    _write(folder / "Observation.ndjson.gz", obs)
    return folder


def _sorted_groups(groups: list[PatientGroup]) -> list[tuple[str, list[dict[str, object]]]]:
    return sorted((g.patient_id, g.resources) for g in groups)  # type: ignore[misc]


def test_export_larger_than_the_budget_is_split_to_fit_it(tmp_path: Path) -> None:
    folder = _many_patients(tmp_path, 300)
    raw = sum(
        len(gzip.decompress(p.read_bytes())) if p.name.endswith(".gz") else p.stat().st_size
        for p in ndjson_files(folder)
    )
    budget = 24_000  # parsed bytes: the export needs several partitions
    assert raw * PARSED_OVERHEAD > 10 * budget
    stats = SpillStats()
    items = list(spill_groups(ndjson_files(folder), memory_bytes=budget, stats=stats))
    spilled = [i for i in items if isinstance(i, PatientGroup)]
    assert stats.spilled
    assert stats.partitions >= raw * PARSED_OVERHEAD // budget
    assert 0 < stats.largest_partition_bytes * PARSED_OVERHEAD <= budget
    in_memory = [
        i
        for i in spill_groups(ndjson_files(folder), memory_bytes=1 << 30)
        if isinstance(i, PatientGroup)
    ]
    assert len(spilled) == 300
    assert _sorted_groups(spilled) == _sorted_groups(in_memory)
    # the same order too: the budget never changes which patients share a batch
    assert [g.patient_id for g in spilled] == [g.patient_id for g in in_memory]


def test_too_few_partitions_are_split_again(tmp_path: Path) -> None:
    """An export bigger than its files said (here: 2 partitions forced) still fits."""
    folder = _many_patients(tmp_path, 200)
    stats = SpillStats()
    budget = 24_000
    groups = [
        i
        for i in spill_groups(ndjson_files(folder), partitions=2, memory_bytes=budget, stats=stats)
        if isinstance(i, PatientGroup)
    ]
    assert stats.partitions > 2
    assert stats.largest_partition_bytes * PARSED_OVERHEAD <= budget
    assert [g.patient_id for g in groups] == sorted(f"p{i}" for i in range(200))


def test_partition_count_follows_size_and_budget() -> None:
    assert partition_count(0, 10_000) == 1
    assert partition_count(10_000, PARSED_OVERHEAD * 10_000) == 1
    assert partition_count(10_001, PARSED_OVERHEAD * 10_000) == 2
    assert partition_count(10**9, 128 << 20) == 45
    assert partition_count(10**12, 1) == 256  # capped: oversized partitions split again


def test_truncated_gzip_is_reported_and_its_first_lines_kept(tmp_path: Path) -> None:
    folder = _many_patients(tmp_path, 400)
    whole = (folder / "Observation.ndjson.gz").read_bytes()
    (folder / "Observation.ndjson.gz").write_bytes(whole[: len(whole) // 2])  # cut download
    for memory_bytes in (1 << 30, 0):  # in memory and spilled
        items = list(spill_groups(ndjson_files(folder), partitions=4, memory_bytes=memory_bytes))
        failures = [i for i in items if isinstance(i, Failure)]
        unreadable = [f for f in failures if f.reason == keys.REASON_UNREADABLE_FILE]
        assert [f.source for f in unreadable] == ["Observation.ndjson.gz"]
        assert "lines read before the fault" in unreadable[0].detail
        groups = [i for i in items if isinstance(i, PatientGroup)]
        assert len(groups) == 400  # Patient.ndjson, after the bad file, was read whole
        n_obs = sum(1 for g in groups for r in g.resources if r["resourceType"] == "Observation")
        assert 0 < n_obs < 1200
        assert {g.patient_id for g in groups if len(g.resources) > 1} >= {"p0", "p1"}


def test_truncated_gzip_in_a_ray_shard_is_reported(tmp_path: Path) -> None:
    import numpy as np
    import orjson as oj

    from training.score.ray_engine import ERROR, PID, read_shard

    folder = _many_patients(tmp_path, 400)
    path = folder / "Observation.ndjson.gz"
    path.write_bytes(path.read_bytes()[:2000])
    tables = list(read_shard({"path": np.array([str(path)])}, frozenset()))
    rows = [r for t in tables for r in t.to_pylist()]
    errors = [oj.loads(r[ERROR]) for r in rows if r[ERROR]]
    assert [e["reason"] for e in errors][-1] == keys.REASON_UNREADABLE_FILE
    assert errors[-1]["source"] == "Observation.ndjson.gz"
    assert any(r[PID] for r in rows)  # the lines before the cut are kept


def test_patient_ids_with_tab_or_newline_survive_spilling(tmp_path: Path) -> None:
    odd = ["tab\there", "new\nline", "back\\slash", 'quo"te']
    _write(tmp_path / "Patient.ndjson", [{"resourceType": "Patient", "id": p} for p in odd])
    _write(
        tmp_path / "Observation.ndjson",
        [
            {"resourceType": "Observation", "id": f"o{i}", "subject": {"reference": f"Patient/{p}"}}
            for i, p in enumerate(odd)
        ],
    )
    groups, failures = _run(tmp_path, memory_bytes=0)
    assert not failures
    assert sorted(g.patient_id for g in groups) == sorted(odd)
    assert all(len(g.resources) == 2 for g in groups)


def test_data_types_and_wrong_case_names_are_unknown_resource_types(tmp_path: Path) -> None:
    names = ["Coding", "OBSERVATION", "observation", "HumanName", "Resource", "DomainResource"]
    known_unused = ["Claim", "MedicinalProduct", "RiskEvidenceSynthesis"]  # R4 resources
    _write(
        tmp_path / "Mixed.ndjson",
        [{"resourceType": t, "id": str(i)} for i, t in enumerate(names + known_unused)],
    )
    _, failures = _run(tmp_path)
    unknown = [f for f in failures if f.reason == keys.REASON_UNKNOWN_TYPE]
    assert [f.source for f in unknown] == [f"Mixed.ndjson:{i + 1}" for i in range(len(names))]
    assert not [f for f in failures if f.reason != keys.REASON_UNKNOWN_TYPE]
    assert len(R4_RESOURCE_TYPES) == 146  # FHIR R4 4.0.1, abstract Resource/DomainResource out


def _parsed(items: list[object]) -> list[object]:
    """Raw groups parsed (``parse_group``), failures and parsed groups as they are."""
    return [parse_group(i) if isinstance(i, RawPatientGroup) else i for i in items]


def test_raw_groups_parse_to_the_same_groups_in_the_same_order(tmp_path: Path) -> None:
    """The fast path (raw lines, parsed by the featuriser) matches the general path."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in (_export(tmp_path / "a"), _many_patients(tmp_path / "b", 300)):
        for kw in ({}, {"memory_bytes": 0, "partitions": 4}, {"memory_bytes": 24_000}):
            general = list(spill_groups(ndjson_files(folder), **kw))  # type: ignore[arg-type]
            raw = list(spill_groups(ndjson_files(folder), raw=True, **kw))  # type: ignore[arg-type]
            assert all(not isinstance(i, PatientGroup) for i in raw)
            assert any(isinstance(i, RawPatientGroup) for i in raw)
            assert _parsed(raw) == general  # same groups, resources, order and failures


def test_featurising_raw_groups_matches_parsed_groups(synthea_export: Path) -> None:
    from moe_core.feature_catalog import DEFAULT_SPEC
    from moe_core.feature_spec import NormStats
    from training.score.builders import FhirRecordBuilder
    from training.score.local import featurise_groups

    stats = NormStats.identity(DEFAULT_SPEC)
    build = FhirRecordBuilder()
    general = list(spill_groups(ndjson_files(synthea_export), memory_bytes=0))
    raw = list(spill_groups(ndjson_files(synthea_export), memory_bytes=0, raw=True))
    a = featurise_groups([g for g in general if isinstance(g, PatientGroup)], build, None, stats)
    b = featurise_groups([g for g in raw if isinstance(g, RawPatientGroup)], build, None, stats)
    assert a.patient_ids == b.patient_ids and a.resources == b.resources
    assert a.failures == b.failures
    assert len(a.rows) == len(b.rows) > 0
    for x, y in zip(a.rows, b.rows, strict=True):
        assert (x.patient_id, x.encounter_id, x.prediction_time, x.text) == (
            y.patient_id,
            y.encounter_id,
            y.prediction_time,
            y.text,
        )
        for name in ("ehr_values", "ehr_mask", "static_num", "static_num_mask", "static_cat"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name))


def test_gc_paused_restores_the_collector() -> None:
    import gc

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()
