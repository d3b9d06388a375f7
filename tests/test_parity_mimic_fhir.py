"""Parity: MIMIC-IV csv.gz -> PatientRecord == MIMIC-IV -> FHIR NDJSON -> fhir_adapters.

On the real MIMIC-IV demo (plus a small radiology/discharge note table for one patient),
every cohort admission is featurised twice: from the cohort builder's records and from
the records ``fhir_adapters`` reads out of ``export-fhir``'s NDJSON. The tensors must be
identical. Float tolerance: unit conversions are affine (``value * scale + offset``);
the FHIR reader memoises them as ``value * (f(1) - f(0)) + f(0)``, which can differ from
the direct form in the last bits of a float64 (about 1e-13 degC for degF rows). Events
are therefore compared with a relative tolerance of 1e-12; the float32 tensors come out
bit-identical, and are compared exactly.
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import torch

from fhir_adapters.mimic_export import MimicExportConfig, export_mimic_fhir
from fhir_adapters.ndjson import NdjsonReport, records_from_ndjson
from moe_core.feature_catalog import DEFAULT_SPEC
from moe_core.feature_spec import NormStats
from moe_core.features import RecordFeaturizer
from moe_core.records import PatientRecord
from training.cohort_store import read_records
from training.mimic import MimicCohortConfig, build_mimic_cohort

NOTE_HEADER = "note_id,subject_id,hadm_id,note_type,note_seq,charttime,storetime,text"
# subject 10004235, admission 24181354: admitted 2196-02-24 14:38, prediction 02-26 14:38
RADIOLOGY = [
    '1,10004235,24181354,RR,1,2196-02-24 16:00:00,2196-02-24 17:00:00,"CHEST: ___ clear."',
    '2,10004235,24181354,RR,2,2196-02-26 13:00:00,2196-02-26 15:00:00,"stored too late"',
]
DISCHARGE = ['9,10004235,24181354,DS,1,2196-02-24 18:00:00,2196-02-24 18:00:00,"SECRET"']

Pair = tuple[PatientRecord, PatientRecord]


def _csv_gz(path: Path, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        f.write(NOTE_HEADER + "\n" + "\n".join(rows) + "\n")


@dataclass(frozen=True)
class Parity:
    export: Path
    pairs: dict[str, tuple[PatientRecord, PatientRecord | None]]

    def matched(self) -> dict[str, Pair]:
        return {k: (m, f) for k, (m, f) in self.pairs.items() if f is not None}


@pytest.fixture(scope="module")
def parity(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Parity:
    demo = shared_data / "mimic-iv-demo-2.2"
    tmp = tmp_path_factory.mktemp("parity")
    _csv_gz(tmp / "notes" / "note" / "radiology.csv.gz", RADIOLOGY)
    _csv_gz(tmp / "notes" / "note" / "discharge.csv.gz", DISCHARGE)
    build_mimic_cohort(MimicCohortConfig(demo, tmp / "cohort", notes_dir=tmp / "notes"))
    export_mimic_fhir(MimicExportConfig(demo, tmp / "fhir", notes_dir=tmp / "notes"))
    mimic = {r.encounter_id: r for r in read_records(tmp / "cohort")}
    report = NdjsonReport()
    fhir = {r.encounter_id: r for r in records_from_ndjson(tmp / "fhir", ndjson_report=report)}
    assert report.corrupt == 0
    return Parity(tmp / "fhir", {k: (m, fhir.get(k)) for k, m in mimic.items()})


@pytest.fixture(scope="module")
def both(parity: Parity) -> dict[str, Pair]:
    return parity.matched()


def test_every_cohort_admission_comes_back_from_fhir(parity: Parity) -> None:
    assert len(parity.pairs) == 123
    assert [k for k, (_, f) in parity.pairs.items() if f is None] == []


def test_events_match_within_float_tolerance(both: dict[str, Pair]) -> None:
    n = 0
    for key, (m, f) in both.items():
        assert [(e.time, e.code) for e in m.events] == [(e.time, e.code) for e in f.events], key
        for a, b in zip(m.events, f.events, strict=True):
            assert math.isclose(a.value, b.value, rel_tol=1e-12), (key, a, b)
        n += len(m.events)
    assert n > 10_000


def test_statics_labels_and_notes_are_identical(both: dict[str, Pair]) -> None:
    for key, (m, f) in both.items():
        assert m.static == f.static, key
        assert m.labels == f.labels, key
        assert (m.anchor_time, m.prediction_time) == (f.anchor_time, f.prediction_time), key
        assert [(n.time, n.kind, n.text) for n in m.notes] == [
            (n.time, n.kind, n.text) for n in f.notes
        ], key
    m, f = both["24181354"]
    assert [n.text for n in f.notes] == ["CHEST: clear."]  # late report and discharge dropped


def test_tensors_are_identical(both: dict[str, Pair]) -> None:
    keys = sorted(both)
    mimic = [both[k][0] for k in keys]
    fhir = [both[k][1] for k in keys]
    values: dict[str, list[float]] = {}
    for r in mimic:
        for e in r.events:
            values.setdefault(e.code, []).append(e.value)
    stats = NormStats.fit(DEFAULT_SPEC, values, [r.static.age or 0.0 for r in mimic])
    featurizer = RecordFeaturizer(DEFAULT_SPEC, stats)
    a, b = featurizer(mimic), featurizer(fhir)
    for name in (
        "ehr_values", "ehr_mask", "ehr_static_num", "ehr_static_num_mask", "ehr_static_cat",
        "present", "labels", "label_mask",
    ):  # fmt: skip
        ta, tb = getattr(a, name), getattr(b, name)
        assert ta is not None and tb is not None, name
        assert torch.equal(ta, tb), name
    assert a.present[:, 1].sum().item() == 1  # the one admission with a radiology note
    assert a.ehr_mask.sum().item() > 5_000


def test_export_keeps_original_units_and_both_code_systems(parity: Parity) -> None:
    export = parity.export
    units: set[str] = set()
    systems: set[str] = set()
    with (export / "Observation.ndjson").open("rb") as fh:
        for i, line in enumerate(fh):
            obs = orjson.loads(line)
            systems.update(c["system"] for c in obs["code"]["coding"])
            q = obs.get("valueQuantity") or {}
            units.add(q.get("code") or q.get("unit") or "")
            if i > 150_000:
                break
    assert {"[degF]", "[in_i]", "meq/L"} <= units  # converted by the FHIR side, not here
    assert "http://loinc.org" in systems
    assert any("mimic" in s for s in systems)


def test_export_writes_each_itemids_own_loinc(parity: Parity) -> None:
    """Whole-blood / blood-gas rows carry their own LOINC, not the serum code."""
    expected = {50809: "2339-0", 50931: "2345-7", 50824: "2947-0", 50983: "2951-2",
                50822: "6298-4", 50806: "2069-3", 50810: "20570-8", 51221: "4544-3",
                220179: "76534-7", 220050: "8480-6"}  # fmt: skip
    seen: dict[int, set[str]] = {}
    with (parity.export / "Observation.ndjson").open("rb") as fh:
        for line in fh:
            codings = orjson.loads(line)["code"]["coding"]
            loinc = next(c["code"] for c in codings if c["system"] == "http://loinc.org")
            itemid = next(int(c["code"]) for c in codings if "mimic" in c["system"])
            if itemid in expected:
                seen.setdefault(itemid, set()).add(loinc)
    assert seen == {i: {code} for i, code in expected.items()}


def test_gcs_total_is_derived_alike_on_both_paths(both: dict[str, Pair]) -> None:
    """MIMIC-IV has no GCS total itemid; both paths derive it from the three parts."""
    n = 0
    for key, (m, f) in both.items():
        totals = [(e.time, e.value) for e in m.events if e.code == "gcs_total"]
        assert totals == [(e.time, e.value) for e in f.events if e.code == "gcs_total"], key
        n += len(totals)
    assert n > 100
