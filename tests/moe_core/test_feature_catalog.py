"""The default feature catalog: codes, conversions, ranges, vocabularies, MIMIC itemids."""

from __future__ import annotations

import csv
import gzip
import math
from pathlib import Path

import pytest

from moe_core.feature_catalog import (
    DEFAULT_SPEC,
    FEATURES,
    ITEMID_LOINC,
    RACES,
    SPEC_VERSION,
    admission_type_category,
    answer_value,
    ethnicity_category,
    loinc_for_itemid,
    race_category,
    sex_category,
)
from moe_core.records import UNKNOWN

BY_CODE = DEFAULT_SPEC.by_code()

HARUTYUNYAN_17 = {
    "capillary_refill", "diastolic_bp", "fio2", "gcs_eye", "gcs_motor", "gcs_total",
    "gcs_verbal", "glucose", "heart_rate", "height", "mean_bp", "spo2", "resp_rate",
    "systolic_bp", "temperature", "weight", "ph",
}  # fmt: skip
CORE_LABS = {
    "creatinine", "bun", "sodium", "potassium", "chloride", "bicarbonate", "wbc",
    "hemoglobin", "hematocrit", "platelets", "lactate", "bilirubin", "inr",
}  # fmt: skip


def test_spec_has_the_17_clinical_variables_and_core_labs() -> None:
    assert DEFAULT_SPEC.version == SPEC_VERSION
    assert set(DEFAULT_SPEC.codes) >= HARUTYUNYAN_17 | CORE_LABS


def test_no_loinc_or_itemid_maps_to_two_features() -> None:
    loincs = [c for f in FEATURES for c in f.loinc]
    itemids = [i for f in FEATURES for i in f.itemids]
    assert len(loincs) == len(set(loincs))
    assert len(itemids) == len(set(itemids))


def test_serum_and_whole_blood_codes_both_present() -> None:
    spec = DEFAULT_SPEC.by_loinc()
    assert spec["2345-7"].code == spec["2339-0"].code == spec["41653-7"].code == "glucose"
    assert spec["2160-0"].code == spec["38483-4"].code == "creatinine"
    assert spec["8480-6"].code == "systolic_bp" and spec["8462-4"].code == "diastolic_bp"
    assert spec["8310-5"].code == spec["8331-1"].code == "temperature"
    assert spec["29463-7"].code == spec["3141-9"].code == "weight"
    assert spec["59408-5"].code == spec["2708-6"].code == "spo2"


@pytest.mark.parametrize(
    ("code", "value", "unit", "expected"),
    [
        ("temperature", 98.6, "[degF]", 37.0),
        ("temperature", 104.0, "°F", 40.0),
        ("temperature", 310.15, "K", 37.0),
        ("weight", 154.0, "[lb_av]", 69.853225),
        ("weight", 16.0, "[oz_av]", 0.45359237),
        ("height", 70.0, "[in_i]", 177.8),
        ("height", 70.0, "Inch", 177.8),
        ("glucose", 5.5, "mmol/L", 99.088),
        ("creatinine", 88.42, "umol/L", 1.0),
        ("bun", 10.0, "mmol/L", 28.014),
        ("bilirubin", 17.104, "umol/L", 1.0),
        ("lactate", 18.016, "mg/dL", 2.0),
        ("fio2", 0.4, "1", 40.0),
        ("hemoglobin", 140.0, "g/L", 14.0),
        ("hematocrit", 0.42, "L/L", 42.0),
        ("wbc", 7500.0, "/uL", 7.5),
        ("heart_rate", 80.0, "bpm", 80.0),
        ("sodium", 140.0, "mEq/L", 140.0),
        ("systolic_bp", 120.0, "mmHg", 120.0),
        ("capillary_refill", 4.0, "s", 1.0),
        ("capillary_refill", 2.0, "s", 0.0),
    ],
)
def test_conversion_gives_canonical_value(
    code: str, value: float, unit: str, expected: float
) -> None:
    f = BY_CODE[code]
    got = f.to_canonical(value, unit)
    assert got is not None and math.isclose(got, expected, rel_tol=1e-4)
    assert f.is_plausible(got)


def test_every_conversion_round_trips_and_lands_in_range() -> None:
    for f in FEATURES:
        lo, hi = f.plausible
        mid = (lo + hi) / 2
        for conv in f.conversions:
            raw = (mid - conv.offset) / conv.scale
            for unit in conv.units:
                back = f.to_canonical(raw, unit)
                assert back is not None, (f.code, unit)
                assert math.isclose(back, mid, rel_tol=1e-9, abs_tol=1e-9), (f.code, unit)


def test_unknown_unit_is_rejected() -> None:
    assert BY_CODE["glucose"].to_canonical(5.0, "furlongs") is None


def test_pounds_itemid_without_unit_is_converted() -> None:
    weight = BY_CODE["weight"]
    unit = weight.unit_for_itemid(226531, "")
    assert unit == "[lb_av]"
    got = weight.to_canonical(220.0, unit)
    assert got is not None and math.isclose(got, 99.79032, rel_tol=1e-6)
    assert weight.unit_for_itemid(226512, "kg") == "kg"


def test_gcs_and_capillary_refill_answers() -> None:
    assert answer_value(BY_CODE["gcs_eye"], "LA6556-0") == 4.0
    assert answer_value(BY_CODE["gcs_eye"], "To Speech") == 3.0
    assert answer_value(BY_CODE["gcs_verbal"], "No Response-ETT") == 1.0
    assert answer_value(BY_CODE["gcs_motor"], "Obeys  Commands") == 6.0
    assert answer_value(BY_CODE["capillary_refill"], "Normal <3 secs") == 0.0
    assert answer_value(BY_CODE["capillary_refill"], "Abnormal >3 Seconds") == 1.0
    assert answer_value(BY_CODE["gcs_eye"], "bogus") is None
    for f in FEATURES:
        for value in f.answers.values():
            assert f.is_plausible(value), f.code


def test_static_vocabularies_and_text_maps() -> None:
    for name, vocab in DEFAULT_SPEC.static_categories.items():
        assert vocab[0] == UNKNOWN, name
        assert len(set(vocab)) == len(vocab), name
    assert race_category("2106-3") == "white"
    assert race_category("BLACK/CAPE VERDEAN") == "black_or_african_american"
    assert race_category("HISPANIC/LATINO - PUERTO RICAN") == UNKNOWN
    assert race_category("UNABLE TO OBTAIN") == UNKNOWN
    assert ethnicity_category("2135-2") == "hispanic"
    assert ethnicity_category("Not Hispanic or Latino") == "not_hispanic"
    assert sex_category("F") == "female" and sex_category(None) == UNKNOWN
    assert admission_type_category("EW EMER.") == "emergency"
    assert admission_type_category("EU OBSERVATION") == "observation"
    assert set(RACES) >= {race_category(c) for c in ("1002-5", "2028-9", "2054-5")}


def _read_ids(path: Path) -> dict[int, str]:
    with gzip.open(path, "rt", newline="") as fh:
        return {int(r["itemid"]): r["label"] for r in csv.DictReader(fh)}


def test_itemids_exist_in_mimic_dictionaries(shared_data: Path) -> None:
    demo = shared_data / "mimic-iv-demo-2.2"
    known = _read_ids(demo / "icu" / "d_items.csv.gz") | _read_ids(
        demo / "hosp" / "d_labitems.csv.gz"
    )
    missing = [(f.code, i) for f in FEATURES for i in f.itemids if i not in known]
    assert not missing


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [(0.21, None, 21.0), (0.5, "1", 50.0), (1.0, "", 100.0), (0.4, "%", 40.0),
     (40.0, "%", 40.0), (60.0, None, 60.0), (0.35, "{fraction}", 35.0)],
)  # fmt: skip
def test_fio2_charted_as_a_fraction_becomes_percent(
    value: float, unit: str | None, expected: float
) -> None:
    fio2 = BY_CODE["fio2"]
    got = fio2.to_canonical(value, unit)
    assert got is not None and math.isclose(got, expected)
    assert fio2.is_plausible(got)


def test_fio2_above_one_in_a_fraction_unit_stays_implausible() -> None:
    fio2 = BY_CODE["fio2"]
    got = fio2.to_canonical(21.0, "1")
    assert got is not None and not fio2.is_plausible(got)
    assert fio2.to_canonical(0.0, None) == 0.0 and not fio2.is_plausible(0.0)


@pytest.mark.parametrize(
    ("itemid", "loinc"),
    [(50809, "2339-0"), (50931, "2345-7"), (50824, "2947-0"), (50983, "2951-2"),
     (50822, "6298-4"), (50806, "2069-3"), (50810, "20570-8"), (51221, "4544-3"),
     (220179, "76534-7"), (220050, "8480-6"), (50820, "11558-4")],
)  # fmt: skip
def test_each_itemid_has_its_own_loinc(itemid: int, loinc: str) -> None:
    feature = DEFAULT_SPEC.by_itemid()[itemid]
    assert loinc_for_itemid(feature, itemid) == loinc
    assert DEFAULT_SPEC.by_loinc()[loinc] is feature  # maps back to the same feature


def test_itemid_loinc_entries_belong_to_one_feature() -> None:
    by_itemid = DEFAULT_SPEC.by_itemid()
    for itemid, loinc in ITEMID_LOINC.items():
        assert loinc in by_itemid[itemid].loinc, itemid
        assert loinc != by_itemid[itemid].loinc[0], f"{itemid}: redundant entry"
