"""PhysioNet/CinC 2012 -> cohort: parameters through the feature spec, labels, archives."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from training.cohort_store import read_records, read_summary
from training.physionet import (
    ANCHOR,
    Outcome,
    PhysioNetConfig,
    build_physionet_cohort,
    parse_record,
    read_outcomes,
)

HEADER = "Time,Parameter,Value\n00:00,RecordID,777\n00:00,Age,64\n00:00,Gender,1\n"


@pytest.fixture(scope="module")
def physionet(shared_data: Path) -> Path:
    return shared_data / "physionet-2012"


def _first_members(archive: Path, n: int) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(archive, "r|gz") as tar:
        for member in tar:
            if member.isfile():
                fh = tar.extractfile(member)
                assert fh is not None
                yield member.name, fh.read()
                n -= 1
                if n == 0:
                    return


def test_outcomes_a_has_554_deaths(physionet: Path) -> None:
    outcomes = read_outcomes(physionet / "Outcomes-a.txt")
    assert len(outcomes) == 4000
    assert sum(o.in_hospital_death for o in outcomes.values()) == 554  # README: 13.85%


def test_real_record_maps_parameters_and_labels(physionet: Path) -> None:
    outcomes = read_outcomes(physionet / "Outcomes-a.txt")
    name, raw = next(_first_members(physionet / "set-a.tar.gz", 2))
    text = raw.decode()
    rec = parse_record(text, outcomes[Path(name).stem])
    assert rec.encounter_id == "physionet2012-a-132539"
    assert rec.static.age == 54 and rec.static.sex == "female"
    assert rec.static.race == "unknown"
    codes = {e.code for e in rec.events}
    assert {"heart_rate", "systolic_bp", "temperature", "gcs_total"} <= codes
    assert all(ANCHOR <= e.time < ANCHOR + timedelta(hours=48) for e in rec.events)
    # Outcomes-a: 132539,6,1,5,-1,0 -> survived, 5 days
    assert rec.labels.mortality is False and rec.labels.long_los is False
    assert rec.labels.readmission is None
    assert any(
        q.source == "physionet2012 Urine" and q.reason == "unknown code" for q in rec.quality
    )


def test_fio2_fraction_becomes_percent() -> None:
    rec = parse_record(HEADER + "01:00,FiO2,0.5\n", None)
    assert [(e.code, e.value) for e in rec.events] == [("fio2", pytest.approx(50.0))]


def test_minus_one_is_missing_not_a_value() -> None:
    rec = parse_record(HEADER + "00:00,Height,-1\n00:00,Weight,-1\n02:00,HR,-1\n", None)
    assert rec.events == [] and rec.quality == []


def test_implausible_value_goes_to_quality() -> None:
    rec = parse_record(HEADER + "03:00,pH,735\n03:00,pH,7.35\n", None)
    assert [e.value for e in rec.events] == [7.35]
    assert [q.reason for q in rec.quality] == ["value out of plausible range"]


def test_event_at_48h_is_not_an_input() -> None:
    rec = parse_record(HEADER + "47:59,HR,80\n48:00,HR,90\n", None)
    assert [e.value for e in rec.events] == [80.0]
    assert rec.quality[0].reason == "after prediction time"


def test_unknown_length_of_stay_is_masked() -> None:
    rec = parse_record(HEADER, Outcome(length_of_stay=-1, survival=3, in_hospital_death=True))
    assert rec.labels.mortality is True and rec.labels.long_los is None


def test_build_from_archive_without_extracting(physionet: Path, tmp_path: Path) -> None:
    data = tmp_path / "pn"
    data.mkdir()
    members = list(_first_members(physionet / "set-a.tar.gz", 12))
    with tarfile.open(data / "set-a.tar.gz", "w:gz") as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    keep = {Path(n).stem for n, _ in members}
    lines = (physionet / "Outcomes-a.txt").read_text().splitlines()
    (data / "Outcomes-a.txt").write_text(
        "\n".join([lines[0], *(ln for ln in lines[1:] if ln.split(",")[0] in keep)]) + "\n"
    )
    summary = build_physionet_cohort(PhysioNetConfig(data, tmp_path / "cohort", seed=1))
    assert summary["admissions"] == 12
    assert not (tmp_path / "cohort" / "set-a").exists()
    records = list(read_records(tmp_path / "cohort"))
    assert {r.encounter_id.split("-")[-1] for r in records} == keep
    assert read_summary(tmp_path / "cohort")["labels"]["readmission"]["unknown"] == 12


def test_unknown_set_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="a, b, c"):
        PhysioNetConfig(tmp_path, tmp_path / "o", sets=("d",))


def test_benchmark_cohort_folder_is_keyed_on_data_and_seed(tmp_path: Path) -> None:
    import importlib.util

    bench = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_physionet.py"
    spec = importlib.util.spec_from_file_location("bench_physionet", bench)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    work, a, b = tmp_path / "work", tmp_path / "a", tmp_path / "b"
    first = module.cohort_dir(work, a, 0)
    assert first == module.cohort_dir(work, a, 0)
    assert first.parent == work
    assert len({first, module.cohort_dir(work, b, 0), module.cohort_dir(work, a, 1),
                module.cohort_dir(work, a, 0, ("a", "b"))}) == 4  # fmt: skip
