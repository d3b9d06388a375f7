"""FHIR resources -> PatientRecord: one named test per clinical / FHIR edge case."""

from __future__ import annotations

import base64
import copy
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fhir_adapters.quality import (
    CENSORED_VALUE,
    DISCHARGE_SUMMARY,
    DUPLICATE,
    IGNORED_STATUS,
    MALFORMED,
    NOTE_FALLBACK_CHARSET,
    NOTE_UNREADABLE,
    OUT_OF_RANGE,
    UNKNOWN_CODE,
)
from fhir_adapters.record import BuildReport, build_records
from moe_core.records import UNKNOWN, PatientRecord
from tests.fhir_adapters.fhir_fixtures import ADMIT, document, encounter, observation, patient


def _one(resources: list[dict[str, object]], **kw: object) -> PatientRecord:
    records = build_records(resources, **kw)  # type: ignore[arg-type]
    assert len(records) == 1
    return records[0]


def _values(rec: PatientRecord, code: str) -> list[float]:
    return [e.value for e in rec.events if e.code == code]


def _reasons(rec: PatientRecord) -> list[str]:
    return [q.reason for q in rec.quality]


def test_demographics_and_admission_facts() -> None:
    rec = _one([patient(), encounter()])
    assert rec.anchor_time == ADMIT
    assert rec.prediction_time == ADMIT + timedelta(hours=48)
    assert rec.static.sex == "female"
    assert rec.static.race == "black_or_african_american"
    assert rec.static.ethnicity == "not_hispanic"
    assert rec.static.admission_type == "emergency"
    assert rec.static.age is not None and math.isclose(rec.static.age, 70.0, abs_tol=0.01)
    assert rec.discharge_time == ADMIT + timedelta(days=10)
    assert rec.discharge_disposition == "Home"
    assert rec.labels.long_los is True and rec.labels.mortality is False


def test_deceased_date_is_kept_and_labels_death() -> None:
    died = ADMIT + timedelta(days=5)
    enc = encounter(days=5)
    rec = _one([patient(deceasedDateTime=died.isoformat()), enc])
    assert rec.death_time == died
    assert rec.labels.mortality is True
    assert rec.labels.readmission is None


def test_only_inpatient_encounters_become_records() -> None:
    resources = [
        patient(),
        encounter("amb", cls="AMB"),
        encounter("e1"),
        encounter("e2", start=ADMIT + timedelta(days=20), cls="ACUTE"),
    ]
    records = build_records(resources)
    assert [r.encounter_id for r in records] == ["e1", "e2"]
    assert records[0].labels.readmission is True  # e2 starts 10 days after e1 ends


def test_temperature_in_fahrenheit_is_converted() -> None:
    rec = _one([patient(), encounter(), observation("t", "8310-5", 1, 98.6, "[degF]")])
    assert _values(rec, "temperature") == pytest.approx([37.0])


def test_weight_in_pounds_is_converted() -> None:
    rec = _one([patient(), encounter(), observation("w", "29463-7", 1, 154.0, "[lb_av]")])
    assert _values(rec, "weight") == pytest.approx([69.853225])


def test_blood_pressure_only_as_panel_components() -> None:
    panel = observation("bp", "85354-9", 2)
    panel["component"] = [
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "valueQuantity": {"value": 120, "unit": "mm[Hg]"},
        },
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
            "valueQuantity": {"value": 80, "unit": "mmHg"},
        },
    ]
    rec = _one([patient(), encounter(), panel])
    assert _values(rec, "systolic_bp") == [120.0]
    assert _values(rec, "diastolic_bp") == [80.0]
    assert UNKNOWN_CODE not in _reasons(rec)


def test_value_string_less_than_five_is_censored_not_guessed() -> None:
    obs = observation("lac", "2524-7", 3, valueString="<5")
    plain = observation("lac2", "2524-7", 4, valueString="1.8")
    rec = _one([patient(), encounter(), obs, plain])
    assert _values(rec, "lactate") == [1.8]
    assert CENSORED_VALUE in _reasons(rec)


def test_entered_in_error_observation_is_ignored() -> None:
    bad = observation("hr", "8867-4", 1, 300.0, "/min", status="entered-in-error")
    good = observation("hr2", "8867-4", 2, 80.0, "/min")
    rec = _one([patient(), encounter(), bad, good])
    assert _values(rec, "heart_rate") == [80.0]
    assert IGNORED_STATUS in _reasons(rec)


def test_out_of_range_value_goes_to_quality() -> None:
    rec = _one([patient(), encounter(), observation("hr", "8867-4", 1, 900.0, "/min")])
    assert not rec.events
    assert OUT_OF_RANGE in _reasons(rec)


def test_gcs_coded_answer_and_effective_period() -> None:
    obs = observation("g", "9267-6", 0)
    del obs["effectiveDateTime"]
    obs["effectivePeriod"] = {"start": (ADMIT + timedelta(hours=5)).isoformat()}
    obs["valueCodeableConcept"] = {"coding": [{"code": "LA6556-0"}], "text": "Spontaneous"}
    rec = _one([patient(), encounter(), obs])
    assert [(e.code, e.value) for e in rec.events] == [("gcs_eye", 4.0)]
    assert rec.events[0].time == ADMIT + timedelta(hours=5)


def test_issued_is_the_last_time_resort() -> None:
    obs = observation("s", "59408-5", 0, 97.0, "%")
    del obs["effectiveDateTime"]
    obs["issued"] = (ADMIT + timedelta(hours=7)).isoformat()
    rec = _one([patient(), encounter(), obs])
    assert rec.events[0].time == ADMIT + timedelta(hours=7)


def test_nothing_at_or_after_prediction_time() -> None:
    now = ADMIT + timedelta(hours=10)
    resources = [
        patient(),
        encounter(),
        observation("a", "8867-4", 9.9, 80.0, "/min"),
        observation("b", "8867-4", 10, 81.0, "/min"),
        document("n1", 11, "later note"),
    ]
    rec = _one(resources, prediction_time=now)
    assert rec.prediction_time == now
    assert _values(rec, "heart_rate") == [80.0]
    assert not rec.notes


def test_discharge_summary_is_excluded() -> None:
    resources = [
        patient(),
        encounter(),
        document("ds", 2, "Discharge summary text", loinc="18842-5"),
        document("pn", 3, "Progress: stable."),
    ]
    rec = _one(resources)
    assert [n.text for n in rec.notes] == ["Progress: stable."]
    assert rec.notes[0].kind == "progress"
    assert DISCHARGE_SUMMARY in _reasons(rec)


def test_deidentification_artifacts_and_html_are_stripped() -> None:
    html = "<html><body><p>Seen by Dr. [**Name**] on ___.</p><script>x()</script></body></html>"
    rec = _one([patient(), encounter(), document("h", 1, html, content_type="text/html")])
    assert rec.notes[0].text == "Seen by Dr. on ."


def test_note_with_only_a_url_is_fetched_through_the_resolver() -> None:
    calls: list[str] = []

    def resolver(url: str) -> tuple[bytes, str | None]:
        calls.append(url)
        return b"Radiology: no acute process.", "text/plain"

    doc = document("u", 2, url="Binary/abc")
    rec = _one([patient(), encounter(), doc], binary_resolver=resolver)
    assert calls == ["Binary/abc"]
    assert rec.notes[0].text == "Radiology: no acute process."
    without = _one([patient(), encounter(), doc])
    assert not without.notes and NOTE_UNREADABLE in _reasons(without)


def test_base64_note_in_latin1_is_decoded() -> None:
    text = "Patient febrile, 39 °C, café-au-lait spots."
    declared = document("l1", 1, text, content_type="text/plain; charset=ISO-8859-1",
                        encoding="latin-1")  # fmt: skip
    undeclared = document("l2", 2, text, encoding="latin-1")
    rec = _one([patient(), encounter(), declared, undeclared])
    assert [n.text for n in rec.notes] == [text, text]
    # The undeclared one says how it was decoded -- readable, so not "unreadable".
    fallback = [q for q in rec.quality if q.reason == NOTE_FALLBACK_CHARSET]
    assert [(q.source, q.detail) for q in fallback] == [
        ("DocumentReference/l2", "not UTF-8; decoded as cp1252")
    ]
    assert NOTE_UNREADABLE not in _reasons(rec)


def test_patient_with_no_observations() -> None:
    rec = _one([patient(), encounter(), document("n", 1, "note")])
    assert rec.events == []
    assert rec.present == (False, True, False)


def test_patient_with_2000_observations() -> None:
    obs = [
        observation(f"o{i}", "8867-4", (i % 470) / 10, 60.0 + i % 50, "/min") for i in range(2000)
    ]
    rec = _one([patient(), encounter(), *obs])
    assert len(rec.events) == 2000
    assert all(a.time <= b.time for a, b in zip(rec.events, rec.events[1:], strict=False))


def test_duplicate_resources_are_deduplicated() -> None:
    hr = observation("hr", "8867-4", 1, 80.0, "/min")
    newer = copy.deepcopy(hr)
    newer["valueQuantity"]["value"] = 82.0
    newer["meta"] = {"lastUpdated": "2150-03-02T00:00:00Z"}
    report = BuildReport()
    rec = _one([patient(), encounter(), encounter(), hr, newer, copy.deepcopy(hr)], report=report)
    assert _values(rec, "heart_rate") == [82.0]
    assert report.duplicates == 3
    assert DUPLICATE in _reasons(rec)


def test_malformed_resources_never_crash_the_patient() -> None:
    broken_enc = {"resourceType": "Encounter", "id": "bad", "subject": {"reference": "Patient/p1"},
                  "class": {"code": "IMP"}}  # fmt: skip
    weird_obs = observation("w", "8867-4", 1, valueQuantity={"value": "eighty"})
    resources = [patient(), encounter(), broken_enc, weird_obs, "not a dict", {"id": "x"}]
    report = BuildReport()
    rec = _one(resources, report=report)  # type: ignore[arg-type]
    assert MALFORMED in _reasons(rec)
    assert report.malformed == 3


def test_unknown_codes_are_counted_once() -> None:
    obs = [observation(f"u{i}", "72514-3", 1, 3.0, "{score}") for i in range(50)]
    rec = _one([patient(), encounter(), *obs])
    notes = [q for q in rec.quality if q.reason == UNKNOWN_CODE]
    assert len(notes) == 1 and notes[0].detail.startswith("50 total")


def test_missing_patient_resource_gives_unknown_demographics() -> None:
    rec = _one([encounter()])
    assert rec.static.sex == UNKNOWN and rec.static.age is None


def test_mimic_itemid_coding_without_unit_uses_the_itemid_unit() -> None:
    obs = observation("lbs", "0000-0", 1, valueQuantity={"value": 220.0})
    obs["code"] = {"coding": [{"system": "http://mimic.mit.edu/fhir/mimic/CodeSystem/"
                               "mimic-chartevents-d-items", "code": "226531"}]}  # fmt: skip
    rec = _one([patient(), encounter(), obs])
    assert _values(rec, "weight") == pytest.approx([99.79032])


def _dated(res: dict[str, Any], key: str, value: str) -> dict[str, Any]:
    res.pop("effectiveDateTime", None)
    res.pop("date", None)
    res[key] = value
    return res


def test_date_only_inputs_count_as_the_end_of_their_day() -> None:
    """Window ends 2150-03-03 08:00: a note / value dated that day may be from 23:00."""
    same_day_note = _dated(document("late", 0, "written that evening"), "date", "2150-03-03")
    day_before = _dated(document("ok", 0, "written the day before"), "date", "2150-03-02")
    same_day_obs = _dated(observation("hr", "8867-4", 0, 99.0, "/min"), "effectiveDateTime",
                          "2150-03-03")  # fmt: skip
    rec = _one([patient(), encounter(), same_day_note, day_before, same_day_obs])
    assert rec.prediction_time == datetime(2150, 3, 3, 8, 0, tzinfo=UTC)
    assert [n.text for n in rec.notes] == ["written the day before"]
    assert rec.notes[0].time == datetime(2150, 3, 2, 23, 59, 59, 999999, tzinfo=UTC)
    assert rec.events == []


def test_date_only_anchor_keeps_the_start_of_its_day() -> None:
    enc = encounter()
    enc["period"] = {"start": "2150-03-01", "end": "2150-03-11"}
    rec = _one([patient(), enc])
    assert rec.anchor_time == datetime(2150, 3, 1, tzinfo=UTC)


def test_effective_instant_is_used() -> None:
    obs = _dated(observation("i", "8867-4", 0, 77.0, "/min"), "effectiveInstant",
                 (ADMIT + timedelta(hours=6)).isoformat())  # fmt: skip
    rec = _one([patient(), encounter(), obs])
    assert [(e.time, e.value) for e in rec.events] == [(ADMIT + timedelta(hours=6), 77.0)]


def test_effective_period_with_only_an_end() -> None:
    end = ADMIT + timedelta(hours=9)
    obs = _dated(observation("p", "8867-4", 0, 66.0, "/min"), "effectivePeriod",
                 {"end": end.isoformat()})  # type: ignore[arg-type]  # fmt: skip
    rec = _one([patient(), encounter(), obs])
    assert [(e.time, e.value) for e in rec.events] == [(end, 66.0)]


def test_cancelled_observation_is_ignored() -> None:
    cancelled = observation("c", "8867-4", 1, 120.0, "/min", status="cancelled")
    rec = _one([patient(), encounter(), cancelled, observation("k", "8867-4", 2, 70.0, "/min")])
    assert _values(rec, "heart_rate") == [70.0]
    assert [q.detail for q in rec.quality if q.reason == IGNORED_STATUS] == ["cancelled"]


def test_diagnostic_report_presented_form_is_a_note() -> None:
    report = {
        "resourceType": "DiagnosticReport",
        "id": "dr1",
        "status": "final",
        "category": [{"coding": [{"code": "RAD"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "36643-5"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": (ADMIT + timedelta(hours=4)).isoformat(),
        "presentedForm": [
            {"contentType": "application/pdf", "data": base64.b64encode(b"%PDF").decode()},
            {"contentType": "text/plain",
             "data": base64.b64encode(b"CXR: no consolidation.").decode()},
        ],
    }  # fmt: skip
    rec = _one([patient(), encounter(), report])
    assert [(n.kind, n.text, n.time) for n in rec.notes] == [
        ("radiology", "CXR: no consolidation.", ADMIT + timedelta(hours=4))
    ]


def test_xhtml_note_is_read_as_text() -> None:
    xhtml = '<html xmlns="http://www.w3.org/1999/xhtml"><body><p>Alert, oriented.</p></body></html>'
    doc = document("x", 1, xhtml, content_type="application/xhtml+xml")
    rec = _one([patient(), encounter(), doc])
    assert [n.text for n in rec.notes] == ["Alert, oriented."]
    assert NOTE_UNREADABLE not in _reasons(rec)


def test_duplicate_last_updated_compares_instants_not_strings() -> None:
    older = observation("hr", "8867-4", 1, 80.0, "/min")
    older["meta"] = {"lastUpdated": "2150-03-02T10:00:00+02:00"}  # 08:00 UTC, sorts later as text
    newer = copy.deepcopy(older)
    newer["valueQuantity"]["value"] = 85.0
    newer["meta"] = {"lastUpdated": "2150-03-02T09:00:00Z"}
    for order in ([older, newer], [newer, older]):
        rec = _one([patient(), encounter(), *order])
        assert _values(rec, "heart_rate") == [85.0]


def test_fio2_fraction_without_unit_is_read_as_percent() -> None:
    resources = [
        patient(),
        encounter(),
        observation("f1", "3150-0", 1, 0.4),
        observation("f2", "3150-0", 2, 0.5, "1"),
        observation("f3", "3150-0", 3, 60.0, "%"),
    ]
    rec = _one(resources)
    assert _values(rec, "fio2") == pytest.approx([40.0, 50.0, 60.0])
    assert OUT_OF_RANGE not in _reasons(rec)


def test_gcs_total_is_derived_from_fhir_parts() -> None:
    parts = [observation("e", "9267-6", 2, valueInteger=3), observation("m", "9268-4", 2,
             valueInteger=5), observation("v", "9270-0", 2, valueInteger=4)]  # fmt: skip
    rec = _one([patient(), encounter(), *parts])
    assert _values(rec, "gcs_total") == [12.0]
    charted = observation("t", "9269-2", 2, valueInteger=11)
    rec = _one([patient(), encounter(), *parts, charted])
    assert _values(rec, "gcs_total") == [11.0]  # a charted total is never overridden


def test_lab_resulted_after_prediction_time_is_not_an_input() -> None:
    """Drawn at 47 h, resulted (``issued``) at 50 h: unknown at the 48 h prediction."""
    late = observation("late", "2160-0", 47, 1.4, "mg/dL",
                       issued=(ADMIT + timedelta(hours=50)).isoformat())  # fmt: skip
    early = observation("early", "2160-0", 46, 1.1, "mg/dL",
                        issued=(ADMIT + timedelta(hours=47)).isoformat())  # fmt: skip
    rec = _one([patient(), encounter(), late, early])
    assert [(e.time, e.value) for e in rec.events] == [(ADMIT + timedelta(hours=46), 1.1)]
