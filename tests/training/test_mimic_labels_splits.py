"""Label definitions, exclusion rules and patient-level splits (one test per edge case)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from training.labels import (
    EXCLUDE_DIED_IN_WINDOW,
    EXCLUDE_DISCHARGED_IN_WINDOW,
    exclusion_reason,
    label_admission,
    long_los_label,
    mortality_label,
    readmission_label,
)
from training.splits import assign_splits, read_splits, write_splits

ADMIT = datetime(2150, 3, 1, 10, tzinfo=UTC)
PRED = ADMIT + timedelta(hours=48)


def test_death_before_prediction_time_is_excluded() -> None:
    death = ADMIT + timedelta(hours=20)
    assert exclusion_reason(PRED, death, death, True) == EXCLUDE_DIED_IN_WINDOW
    assert mortality_label(PRED, death, death, True) is None


def test_discharge_before_prediction_time_is_excluded() -> None:
    assert exclusion_reason(PRED, ADMIT + timedelta(hours=30), None) == (
        EXCLUDE_DISCHARGED_IN_WINDOW
    )
    assert exclusion_reason(PRED, ADMIT + timedelta(days=5), None) is None


def test_death_after_prediction_time_is_in_hospital_mortality() -> None:
    death = ADMIT + timedelta(days=4)
    assert exclusion_reason(PRED, death, death, True) is None
    assert mortality_label(PRED, death, death, True) is True
    assert mortality_label(PRED, death, None, False) is False


def test_expire_flag_without_deathtime_counts_as_death() -> None:
    assert mortality_label(PRED, ADMIT + timedelta(days=3), None, True) is True


def test_long_los_is_strictly_more_than_seven_days() -> None:
    assert long_los_label(ADMIT, ADMIT + timedelta(days=7)) is False
    assert long_los_label(ADMIT, ADMIT + timedelta(days=7, minutes=1)) is True
    assert long_los_label(ADMIT, None) is None


def test_readmission_within_thirty_days_of_live_discharge() -> None:
    disch = ADMIT + timedelta(days=5)
    assert readmission_label(disch, False, [disch + timedelta(days=30)]) is True
    assert readmission_label(disch, False, [disch + timedelta(days=30, minutes=1)]) is False
    assert readmission_label(disch, False, [ADMIT - timedelta(days=10)]) is False


def test_readmission_is_masked_when_patient_died() -> None:
    disch = ADMIT + timedelta(days=5)
    labels = label_admission(
        anchor_time=ADMIT,
        prediction_time=PRED,
        discharge_time=disch,
        death_time=disch,
        expire_flag=True,
        other_admissions=[disch + timedelta(days=2)],
    )
    assert labels.mortality is True and labels.readmission is None and labels.long_los is False


def test_splits_are_by_patient_seeded_and_reproducible(tmp_path: Path) -> None:
    ids = [f"p{i}" for i in range(1000)]
    a = assign_splits(ids, seed=7)
    assert a == assign_splits(reversed(ids), seed=7)
    assert a != assign_splits(ids, seed=8)
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 800, "val": 100, "test": 100}
    write_splits(tmp_path / "s.json", a, seed=7)
    assert read_splits(tmp_path / "s.json") == a


def test_hash_split_is_stable_and_close_to_fractions() -> None:
    from training.splits import hash_split

    ids = [f"p{i}" for i in range(20_000)]
    got = [hash_split(p, seed=3) for p in ids]
    assert got == [hash_split(p, seed=3) for p in ids]
    assert abs(got.count("train") / len(ids) - 0.8) < 0.02
    assert got != [hash_split(p, seed=4) for p in ids]
