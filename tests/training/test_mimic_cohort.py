"""The MIMIC-IV cohort builder on the real MIMIC-IV demo (100 patients, 275 admissions).

Expected counts were verified by hand with DuckDB queries written separately from the
builder (run from the demo folder):

* 275 admissions: ``SELECT count(*) FROM 'hosp/admissions.csv.gz'``.
* 128 admissions with an ICU stay: ``SELECT count(DISTINCT hadm_id) FROM
  'icu/icustays.csv.gz'`` (140 stays in 128 admissions).
* 128 adults: admissions joined to patients, ``anchor_age + year(admittime) -
  anchor_year >= 18`` keeps all 128 (youngest is 21).
* 2 died before admittime + 48 h: ``deathtime < admittime + INTERVAL 48 HOUR``;
  3 more discharged alive before it (``dischtime < admittime + 48 h``, no deathtime,
  ``hospital_expire_flag = 0``) -> cohort of 123 admissions of 97 patients.
  (``hospital_expire_flag = 1`` iff ``deathtime`` is set, for all 128.)
* 13 in-hospital deaths in the cohort: ``hospital_expire_flag = 1``.
* 63 stays > 7 days: ``dischtime - admittime > INTERVAL 7 DAY``.
* 21 readmissions among the 110 live discharges: another admission of the same
  ``subject_id`` with ``admittime`` in ``[dischtime, dischtime + INTERVAL 30 DAY]``;
  the 13 deaths have no readmission label.
"""

from __future__ import annotations

import gzip
import shutil
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from moe_core.records import PatientRecord
from training.cohort_store import read_records, read_summary
from training.mimic import MimicCohortConfig, MimicLayoutError, build_mimic_cohort
from training.splits import read_splits


@pytest.fixture(scope="module")
def demo(shared_data: Path) -> Path:
    return shared_data / "mimic-iv-demo-2.2"


@pytest.fixture(scope="module")
def cohort(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mimic") / "cohort"
    build_mimic_cohort(MimicCohortConfig(demo, out, seed=3))
    return out


@pytest.fixture(scope="module")
def records(cohort: Path) -> list[PatientRecord]:
    return list(read_records(cohort))


def test_cohort_step_counts_match_hand_verified_numbers(cohort: Path) -> None:
    steps = [(s["count"], s["removed"]) for s in read_summary(cohort)["steps"]]
    assert steps == [(275, 0), (128, 147), (128, 0), (126, 2), (123, 3)]
    assert read_summary(cohort)["patients"] == 97


def test_label_counts_match_hand_verified_numbers(cohort: Path) -> None:
    labels = read_summary(cohort)["labels"]
    assert (labels["mortality"]["positive"], labels["mortality"]["negative"]) == (13, 110)
    assert (labels["long_los"]["positive"], labels["long_los"]["negative"]) == (63, 60)
    assert labels["readmission"] == labels["readmission"] | {
        "positive": 21,
        "negative": 89,
        "unknown": 13,
    }


def test_readmission_is_masked_exactly_for_in_hospital_deaths(
    records: list[PatientRecord],
) -> None:
    for r in records:
        assert (r.labels.readmission is None) == bool(r.labels.mortality)


def test_no_event_at_or_after_prediction_time(records: list[PatientRecord]) -> None:
    assert sum(len(r.events) for r in records) > 10_000
    for r in records:
        assert r.prediction_time - r.anchor_time == timedelta(hours=48)
        assert all(r.anchor_time <= e.time < r.prediction_time for e in r.events)


def test_every_admission_has_ehr_and_known_feature_codes(records: list[PatientRecord]) -> None:
    from moe_core.feature_catalog import DEFAULT_SPEC

    codes = set(DEFAULT_SPEC.codes)
    assert all(r.present[0] for r in records)
    assert {e.code for r in records for e in r.events} <= codes


def test_values_are_plausible_and_in_canonical_units(records: list[PatientRecord]) -> None:
    from moe_core.feature_catalog import DEFAULT_SPEC

    by_code = DEFAULT_SPEC.by_code()
    temps = [e.value for r in records for e in r.events if e.code == "temperature"]
    assert temps and 30 < float(np.median(temps)) < 40  # Celsius, even from degF rows
    assert all(by_code[e.code].is_plausible(e.value) for r in records for e in r.events)


def test_split_is_by_patient_and_written_to_file(cohort: Path) -> None:
    table = pq.read_table(cohort / "admissions.parquet").to_pylist()
    per_patient: dict[str, set[str]] = defaultdict(set)
    for row in table:
        per_patient[row["patient_id"]].add(row["split"])
    assert all(len(s) == 1 for s in per_patient.values())
    saved = read_splits(cohort)
    assert saved == {p: next(iter(s)) for p, s in per_patient.items()}
    assert sorted(set(saved.values())) == ["test", "train", "val"]


def test_same_seed_gives_same_split_file(demo: Path, cohort: Path, tmp_path: Path) -> None:
    build_mimic_cohort(MimicCohortConfig(demo, tmp_path / "again", seed=3))
    assert (tmp_path / "again" / "splits.json").read_text() == (cohort / "splits.json").read_text()
    assert read_splits(tmp_path / "again") == read_splits(cohort)


def _write_csv_gz(path: Path, header: str, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        f.write(header + "\n" + "\n".join(rows) + "\n")


def test_notes_before_prediction_time_only_and_never_discharge(demo: Path, tmp_path: Path) -> None:
    # subject 10004235, admission 24181354: admitted 2196-02-24 14:38 (ICU, kept).
    header = "note_id,subject_id,hadm_id,note_type,note_seq,charttime,storetime,text"
    _write_csv_gz(
        tmp_path / "note" / "radiology.csv.gz",
        header,
        [
            "1,10004235,24181354,RR,1,2196-02-24 16:00:00,2196-02-24 17:00:00,"
            '"CXR: ___ no effusion"',
            '2,10004235,24181354,RR,2,2196-02-26 13:00:00,2196-02-26 15:00:00,"stored too late"',
            '3,10004235,,RR,3,2196-02-25 09:00:00,,"outpatient-linked report in window"',
        ],
    )
    _write_csv_gz(
        tmp_path / "note" / "discharge.csv.gz",
        header,
        ['9,10004235,24181354,DS,1,2196-02-24 18:00:00,2196-02-24 18:00:00,"DISCHARGE SECRET"'],
    )
    out = tmp_path / "cohort"
    build_mimic_cohort(MimicCohortConfig(demo, out, notes_dir=tmp_path))
    rec = next(r for r in read_records(out) if r.encounter_id == "24181354")
    assert [n.text for n in rec.notes] == ["CXR: no effusion", "outpatient-linked report in window"]
    assert all(n.time < rec.prediction_time and n.kind == "radiology" for n in rec.notes)
    texts = pq.read_table(out / "notes.parquet").column("text").to_pylist()
    assert not any("DISCHARGE SECRET" in t for t in texts)
    assert read_summary(out)["availability_patterns"]["E+T"] == 1


def test_cxr_first_frontal_ap_preferred_inside_window(demo: Path, tmp_path: Path) -> None:
    cxr = tmp_path / "cxr"
    meta = [
        # dicom_id, subject, study, view, date, time
        ("pa1", 10004235, 501, "PA", "21960224", "150000.000"),  # earlier, but PA
        ("ap1", 10004235, 502, "AP", "21960225", "101500.5"),  # first AP: chosen
        ("ap2", 10004235, 503, "AP", "21960225", "230000"),
        ("lat", 10004235, 504, "LATERAL", "21960224", "143900"),
        ("late", 10004235, 505, "AP", "21960227", "100000"),  # after prediction time
    ]
    rows = [f"{d},{s},{st},,{v},3,4,{date},{t}" for d, s, st, v, date, t in meta]
    _write_csv_gz(
        cxr / "mimic-cxr-2.0.0-metadata.csv.gz",
        "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,"
        "Columns,StudyDate,StudyTime",
        rows,
    )
    for d, s, st, *_ in meta:
        path = cxr / "files" / "p10" / f"p{s}" / f"s{st}" / f"{d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 3), 128, dtype=np.uint8)).save(path)
    out = tmp_path / "cohort"
    build_mimic_cohort(MimicCohortConfig(demo, out, cxr_dir=cxr))
    rec = next(r for r in read_records(out) if r.encounter_id == "24181354")
    assert [(i.study_id, i.view_position) for i in rec.images] == [("502", "AP")]
    assert rec.images[0].time < rec.prediction_time
    assert rec.images[0].load().shape == (4, 3)
    assert read_summary(out)["availability_patterns"]["E+I"] == 1


def test_missing_icustays_names_the_file(demo: Path, tmp_path: Path) -> None:
    root = tmp_path / "mimic"
    shutil.copytree(demo / "hosp", root / "hosp")
    (root / "icu").mkdir()
    with pytest.raises(MimicLayoutError, match="icustays"):
        build_mimic_cohort(MimicCohortConfig(root, tmp_path / "out"))


def test_v1_layout_core_folder_and_ethnicity_column(demo: Path, tmp_path: Path) -> None:
    root = tmp_path / "mimic"
    shutil.copytree(demo / "icu", root / "icu")
    (root / "hosp").mkdir()
    (root / "core").mkdir()
    shutil.copy(demo / "hosp" / "labevents.csv.gz", root / "hosp" / "labevents.csv.gz")
    shutil.copy(demo / "hosp" / "patients.csv.gz", root / "core" / "patients.csv.gz")
    with gzip.open(demo / "hosp" / "admissions.csv.gz", "rt") as src:
        text = src.read()
    (root / "core" / "admissions.csv").write_text(text.replace(",race,", ",ethnicity,", 1))
    build_mimic_cohort(MimicCohortConfig(root, tmp_path / "out"))
    assert read_summary(tmp_path / "out")["admissions"] == 123


def test_missing_required_column_is_named(demo: Path, tmp_path: Path) -> None:
    root = tmp_path / "mimic"
    shutil.copytree(demo / "icu", root / "icu")
    shutil.copytree(demo / "hosp", root / "hosp")
    with gzip.open(demo / "hosp" / "admissions.csv.gz", "rt") as src:
        text = src.read()
    (root / "hosp" / "admissions.csv.gz").unlink()
    (root / "hosp" / "admissions.csv").write_text(text.replace(",dischtime,", ",leave_time,", 1))
    with pytest.raises(MimicLayoutError, match="dischtime"):
        build_mimic_cohort(MimicCohortConfig(root, tmp_path / "out"))


# subject 10004235, admission 24181354: admitted 2196-02-24 14:38, prediction time
# 2196-02-26 14:38. Lactate (itemid 50813) drawn inside the window but resulted after it.
_LATE_LABS = [
    # id,subject,hadm,specimen,itemid,provider,charttime,storetime,value,valuenum,uom,...
    "990001,10004235,24181354,1,50813,,2196-02-26 12:00:00,2196-02-26 13:00:00,7.7,7.7,mmol/L,"
    ",,,STAT,",  # drawn 45.4 h, resulted 46.4 h: an input
    "990002,10004235,24181354,2,50813,,2196-02-26 13:00:00,2196-02-26 16:00:00,8.8,8.8,mmol/L,"
    ",,,STAT,",  # drawn 46.4 h, resulted 49.4 h: not known at 48 h
    # no storetime: known at charttime
    "990003,10004235,24181354,3,50813,,2196-02-26 13:30:00,,9.9,9.9,mmol/L,,,,STAT,",
]


@pytest.fixture(scope="module")
def altered(
    demo: Path, records: list[PatientRecord], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[str]]:
    """The demo with late-resulted labs added and one patient's race known only at the
    last admission; returns (cohort, that patient's admissions oldest first)."""
    root = tmp_path_factory.mktemp("mimic_altered")
    shutil.copytree(demo / "icu", root / "icu")
    (root / "hosp").mkdir()
    shutil.copy(demo / "hosp" / "patients.csv.gz", root / "hosp" / "patients.csv.gz")
    with gzip.open(demo / "hosp" / "labevents.csv.gz", "rt") as src:
        labs = src.read()
    with gzip.open(root / "hosp" / "labevents.csv.gz", "wt") as dst:
        dst.write(labs.rstrip("\n") + "\n" + "\n".join(_LATE_LABS) + "\n")
    by_patient: dict[str, list[PatientRecord]] = defaultdict(list)
    for rec in records:
        by_patient[rec.patient_id].append(rec)
    pid, recs = next((p, r) for p, r in sorted(by_patient.items()) if len(r) >= 3)
    hadms = [r.encounter_id for r in sorted(recs, key=lambda r: r.anchor_time)]
    with gzip.open(demo / "hosp" / "admissions.csv.gz", "rt") as src:
        lines = src.read().splitlines()
    race_col = lines[0].split(",").index("race")
    out = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        if cells[0] == pid:  # the demo's race values hold no commas
            cells[race_col] = "ASIAN" if cells[1] == hadms[-1] else "UNKNOWN"
        out.append(",".join(cells))
    with gzip.open(root / "hosp" / "admissions.csv.gz", "wt") as dst:
        dst.write("\n".join(out) + "\n")
    build_mimic_cohort(MimicCohortConfig(root, root / "cohort", seed=3))
    return root / "cohort", hadms


def test_lab_results_count_only_once_stored(altered: tuple[Path, list[str]]) -> None:
    rec = next(r for r in read_records(altered[0]) if r.encounter_id == "24181354")
    late = [e for e in rec.events if e.code == "lactate" and e.value in (7.7, 8.8, 9.9)]
    assert sorted(e.value for e in late) == [7.7, 9.9]  # 8.8 was resulted after 48 h
    assert all(e.time < rec.prediction_time for e in rec.events)


def test_race_never_comes_from_a_later_admission(altered: tuple[Path, list[str]]) -> None:
    cohort, hadms = altered
    race = {r.encounter_id: r.static.race for r in read_records(cohort)}
    assert race[hadms[-1]] == "asian"
    assert [race[h] for h in hadms[:-1]] == ["unknown"] * (len(hadms) - 1)
