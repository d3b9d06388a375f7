"""``export-fhir`` on a tiny hand-written MIMIC-IV folder: units, codes, notes, CXR studies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_adapters.mimic_export import MimicExportConfig, export_mimic_fhir
from fhir_adapters.ndjson import records_from_ndjson

FILES = {
    "hosp/patients.csv": "subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod\n"
    "1,M,60,2150,2011 - 2013,2150-03-05\n",
    "hosp/admissions.csv": "subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,"
    "admit_provider_id,admission_location,discharge_location,insurance,language,"
    "marital_status,race,edregtime,edouttime,hospital_expire_flag\n"
    "1,100,2150-03-01 00:00:00,2150-03-05 00:00:00,2150-03-05 09:00:00,EW EMER.,,,DIED,,,,"
    "HISPANIC/LATINO - CUBAN,,,1\n",
    "icu/icustays.csv": "subject_id,hadm_id,stay_id,first_careunit,last_careunit,intime,"
    "outtime,los\n1,100,7,MICU,MICU,2150-03-01 02:00:00,2150-03-04 00:00:00,2.9\n",
    "icu/chartevents.csv": "subject_id,hadm_id,stay_id,caregiver_id,charttime,storetime,"
    "itemid,value,valuenum,valueuom,warning\n"
    "1,100,7,,2150-03-01 03:00:00,,223761,98.6,98.6,°F,\n"
    "1,100,7,,2150-03-01 03:00:00,,226531,176,176,,\n"
    "1,100,7,,2150-03-01 04:00:00,,220045,,,,\n"
    "1,100,7,,2150-03-01 05:00:00,,999999,1,1,,\n",
    "hosp/labevents.csv": "labevent_id,subject_id,hadm_id,specimen_id,itemid,order_provider_id,"
    "charttime,storetime,value,valuenum,valueuom,ref_range_lower,ref_range_upper,flag,"
    "priority,comments\n"
    "1,1,,5,50983,,2150-03-01 06:00:00,,140,140,mEq/L,,,,,\n"
    "2,1,100,5,50813,,2150-03-01 07:00:00,,<0.5,,mmol/L,,,,,\n",
}


@pytest.fixture()
def export(tmp_path: Path) -> Path:
    root = tmp_path / "mimic"
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    cxr = tmp_path / "cxr"
    cxr.mkdir()
    (cxr / "mimic-cxr-2.0.0-metadata.csv").write_text(
        "dicom_id,subject_id,study_id,ViewPosition,StudyDate,StudyTime\n"
        "d1,1,55,AP,21500301,101500.25\nd2,1,55,LATERAL,21500301,101600\n"
    )
    out = tmp_path / "fhir"
    counts = export_mimic_fhir(MimicExportConfig(root, out, cxr_dir=cxr))
    assert counts == {"Patient": 1, "Encounter": 1, "Observation": 4, "ImagingStudy": 1}
    return out


def _read(folder: Path, rtype: str) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in (folder / f"{rtype}.ndjson").read_bytes().splitlines()]


def test_fahrenheit_row_keeps_its_unit_and_both_codes(export: Path) -> None:
    temp = next(
        o for o in _read(export, "Observation") if o["code"]["coding"][1]["code"] == "223761"
    )
    assert temp["valueQuantity"] == {
        "value": 98.6, "unit": "°F", "system": "http://unitsofmeasure.org", "code": "[degF]",
    }  # fmt: skip
    systems = [c["system"] for c in temp["code"]["coding"]]
    assert systems[0] == "http://loinc.org" and "mimic" in systems[1]


def test_blank_unit_weight_is_written_in_pounds(export: Path) -> None:
    (weight,) = [
        o for o in _read(export, "Observation") if o["code"]["coding"][1]["code"] == "226531"
    ]
    assert weight["valueQuantity"]["code"] == "[lb_av]"


def test_censored_lab_value_is_a_value_string(export: Path) -> None:
    (lactate,) = [
        o for o in _read(export, "Observation") if o["code"]["coding"][1]["code"] == "50813"
    ]
    assert lactate["valueString"] == "<0.5"


def test_unknown_itemids_and_empty_rows_are_not_exported(export: Path) -> None:
    codes = {o["code"]["coding"][1]["code"] for o in _read(export, "Observation")}
    assert codes == {"223761", "226531", "50983", "50813"}


def test_patient_and_encounter_carry_demographics_and_death(export: Path) -> None:
    (patient,) = _read(export, "Patient")
    assert patient["birthDate"] == "2090-01-01" and patient["gender"] == "male"
    assert patient["deceasedDateTime"] == "2150-03-05T09:00:00Z"
    (enc,) = _read(export, "Encounter")
    assert enc["period"]["end"] == "2150-03-05T09:00:00Z"  # death after midnight discharge
    assert enc["priority"]["coding"][0]["code"] == "EM"


def test_cxr_study_lists_views_and_jpg_paths(export: Path) -> None:
    (study,) = _read(export, "ImagingStudy")
    assert study["started"] == "2150-03-01T10:15:00Z"
    views = [s["instance"][0]["title"] for s in study["series"]]
    assert views == ["AP", "LATERAL"]
    assert study["series"][0]["instance"][0]["extension"][0]["valueString"].endswith(
        "p1/p1/s55/d1.jpg"
    )


def test_export_reads_back_as_a_record_in_celsius_and_kg(export: Path) -> None:
    (rec,) = records_from_ndjson(export)
    values = {e.code: e.value for e in rec.events}
    assert values["temperature"] == pytest.approx(37.0)
    assert values["weight"] == pytest.approx(176 * 0.45359237)
    assert values["sodium"] == 140.0
    assert rec.static.ethnicity == "hispanic" and rec.labels.mortality is True
