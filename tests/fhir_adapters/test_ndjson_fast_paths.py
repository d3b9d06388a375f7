"""The NDJSON reader's byte-level shortcuts give what the general (parsing) path gives.

``_leading_type`` / ``_leading_key`` read a line's first keys without parsing,
``_reference_match`` starts the patient-reference regex at the first key that can match,
and ``records_from_ndjson`` reads a patient's resources in one pass when the line
prefixes prove there is nothing to deduplicate. Each is checked here against the
general path on tricky inputs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_adapters import ndjson
from fhir_adapters.ndjson import NdjsonReport, group_by_patient, records_from_ndjson
from fhir_adapters.record import BuildReport, build_patient_records, build_records
from tests.fhir_adapters.fhir_fixtures import document, encounter, observation, patient

# The type regex the reader used before the prefix shortcut (first "resourceType" key).
_SEARCH_TYPE = re.compile(rb'"resourceType"\s*:\s*"([A-Za-z]+)"')

LINES = [
    b'{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/p1"}}',
    b'{ "resourceType" : "Encounter", "id": "e1"}',  # whitespace: regex fallback
    b'{"resourceType":"Obs\\u0065rvation","id":"o2"}',  # escaped: not read from bytes
    b'{"resourceType":"Observation2","id":"o3"}',  # not [A-Za-z]+
    b'{"resourceType":"","id":"o4"}',
    b'{"id":"o5","resourceType":"Observation"}',  # type is not the first key
    b'{"resourceType":"Claim","contained":[{"resourceType":"Patient","id":"x"}]}',
    b'{"resourceType":"Observation"',  # truncated
    b'{"resourceType":"Observation","id":"a\\"b"}',  # escaped quote in the id
    b'{"resourceType":"Observation","id":""}',  # empty id
    b'{"resourceType":"Observation","id":"\xc3\xa9t\xc3\xa9"}',  # UTF-8 id
    b'{"resourceType":"Observation","id":"\xff"}',  # not UTF-8
    b'{"resourceType":"Observation", "id":"o6"}',  # space before the id key
    b'{"resourceType":"Observation","meta":{"id":"m"},"id":"o7"}',  # id not second
    b"[1, 2]",
    b"{not json",
]


@pytest.mark.parametrize("line", LINES)
def test_leading_type_agrees_with_the_regex_on_a_first_key(line: bytes) -> None:
    got = ndjson._leading_type(line)
    m = _SEARCH_TYPE.search(line)
    if got is not None:  # when it answers, it is the first key's type, as the regex says
        assert m is not None and m.start() == 1 + len(line[1:]) - len(line[1:].lstrip())
        assert got == m.group(1).decode()
    elif m is not None:  # when it does not, the type key is not the first, or not plain
        assert m.start() > 1 + len(line[1:]) - len(line[1:].lstrip())


@pytest.mark.parametrize("line", LINES)
def test_leading_key_is_the_parsed_type_and_id_or_nothing(line: bytes) -> None:
    key = ndjson._leading_key(line)
    if key is None:
        return
    res = orjson.loads(line)
    assert key == (res["resourceType"], res["id"])


def test_leading_key_answers_the_common_form() -> None:
    assert ndjson._leading_key(LINES[0]) == ("Observation", "o1")
    assert ndjson._leading_key(LINES[10]) == ("Observation", "été")
    for i in (1, 2, 5, 8, 9, 11, 12, 13):
        assert ndjson._leading_key(LINES[i]) is None, LINES[i]


REF_LINES = [
    b'{"subject":{"reference":"Patient/p1"}}',
    b'{"patient":{"reference":"Patient/p2"},"subject":{"reference":"Patient/p1"}}',
    b'{"subject":{"reference":"Patient/p1"},"patient":{"reference":"Patient/p2"}}',
    b'{"subject":"text","x":{"patient" : {"display":"a","reference":"urn:uuid:p3"}}}',
    b'{"note":"\\"subject\\"","subject":{"reference":"Patient/p4"}}',
    b'{"subjectX":{"reference":"Patient/p5"}}',
    b'{"code":{"text":"no patient here"}}',
    b'{"patient":{"reference":"Patient/p6"}}',
    b'{"patient":{"display":"x"},"subject":{"reference":"Patient/p7"}}',
]


@pytest.mark.parametrize("line", REF_LINES)
def test_reference_match_is_the_regex_search(line: bytes) -> None:
    got = ndjson._reference_match(line)
    want = ndjson._REF_RE.search(line)
    assert (got and got.group(1)) == (want and want.group(1))


def test_patient_id_memo_is_reference_id() -> None:
    ids = ndjson._PatientIds(limit=2)
    for raw in [b"Patient/1", b"urn:uuid:2", b"http://x/fhir/Patient/3/_history/4", b"Patient/1"]:
        assert ids(raw) == ndjson.reference_id(raw.decode())
    assert len(ids.ids) <= 2


def _write(path: Path, resources: Sequence[object], extra: Sequence[bytes] = ()) -> None:
    path.write_bytes(b"\n".join([*(orjson.dumps(r) for r in resources), *extra]) + b"\n")


def _tricky_export(tmp_path: Path) -> Path:
    """Duplicates (lastUpdated with offsets), no ids, repeated JSON keys, corrupt lines."""
    out = tmp_path / "export"
    out.mkdir()
    _write(out / "Patient.ndjson", [patient("p1"), patient("p2"), patient("p3"), patient("p4")])
    _write(
        out / "Encounter.ndjson",
        [encounter("e1", "p1"), encounter("e2", "p2"), encounter("e3", "p3"),
         encounter("e4", "p4")],
    )  # fmt: skip
    old = observation("dup", "8867-4", 1, 80.0, "/min", pid="p1",
                      meta={"lastUpdated": "2150-03-01T10:00:00+02:00"})  # fmt: skip
    new = observation("dup", "8867-4", 1, 90.0, "/min", pid="p1",
                      meta={"lastUpdated": "2150-03-01T09:00:00Z"})  # fmt: skip
    anonymous = observation("x", "8310-5", 2, 37.0, "Cel", pid="p2")
    del anonymous["id"]
    obs = [
        observation("o1", "8867-4", 3, 70.0, "/min", pid="p1"),
        new,  # later instant, listed first
        old,
        observation("o2", "8867-4", 4, 71.0, "/min", pid="p2"),
        anonymous,  # no id: goes after the others
        observation("o3", "8867-4", 5, 72.0, "/min", pid="p2"),
        observation("o4", "8867-4", 6, 900.0, "/min", pid="p3"),  # out of range
        observation("o5", "8480-6", 7, 120.0, "mm[Hg]", pid="p3", status="entered-in-error"),
        observation("o6", "9999-9", 8, 1.0, pid="p3"),  # unknown code
    ]
    # p4: a repeated "id" key (the parser keeps the last) makes two lines one resource.
    repeated = (
        b'{"resourceType":"Observation","id":"r1","status":"final","code":{"coding":'
        b'[{"system":"http://loinc.org","code":"8867-4"}]},"subject":{"reference":'
        b'"Patient/p4"},"effectiveDateTime":"2150-03-01T09:00:00+00:00",'
        b'"valueQuantity":{"value":60,"unit":"/min"},"id":"r2"}'
    )
    extra = [
        repeated,
        orjson.dumps(observation("r2", "8867-4", 2, 65.0, "/min", pid="p4")),
        b'{"resourceType":"Observation","id":"bad","subject":{"reference":"Patient/p1"},',
    ]
    _write(out / "Observation.ndjson", obs, extra)
    _write(
        out / "DocumentReference.ndjson",
        [document("d1", 1, "note", pid="p2"), document("d\\1", 2, "escaped id", pid="p3")],
    )
    _write(out / "ExplanationOfBenefit.ndjson",
           [{"resourceType": "ExplanationOfBenefit", "id": "eob", "contained": [
               {"resourceType": "Observation", "id": "c1", "subject": {"reference": "p1"}}],
             "patient": {"reference": "Patient/p1"}}])  # fmt: skip
    return out


def test_one_pass_and_two_pass_reading_match_the_general_assembler(tmp_path: Path) -> None:
    export = _tricky_export(tmp_path)
    nd_report, streamed_report = NdjsonReport(), BuildReport()
    streamed = list(records_from_ndjson(export, ndjson_report=nd_report,
                                        build_report=streamed_report))  # fmt: skip
    groups = list(group_by_patient(export))
    direct_report = BuildReport()
    direct = build_records([r for _, rs in groups for r in rs], report=direct_report)
    assert streamed == direct
    assert len(streamed) == 4
    for field in ("duplicates", "malformed", "records", "patients_without_admission"):
        assert getattr(streamed_report, field) == getattr(direct_report, field), field
    assert nd_report.corrupt == 1 and nd_report.skipped_types["ExplanationOfBenefit"] == 1
    by_pid = {r.patient_id: r for r in streamed}
    assert [e.value for e in by_pid["p1"].events] == [90.0, 70.0]  # later lastUpdated won
    assert len(by_pid["p4"].events) == 1  # the two "r2" lines count as one resource


def test_one_pass_is_used_only_when_the_prefixes_prove_no_duplicates(tmp_path: Path) -> None:
    lines = {pid: ls for pid, ls in ndjson._line_groups(
        _tricky_export(tmp_path), types=ndjson.SUPPORTED_TYPES, spill_bytes=1 << 20,
        tmp_dir=None, report=NdjsonReport(), shared=[])}  # fmt: skip
    kwargs: dict[str, Any] = {}
    nd_report, report = NdjsonReport(), BuildReport()

    def one(pid: str) -> Any:
        return ndjson._records_one_pass(pid, lines[pid], nd_report, report, [], kwargs)

    assert one("p1") is None  # duplicate (type, id)
    assert one("p2") is None  # a resource without id
    assert one("p4") is None  # the parsed id ("r2") is not the prefix's ("r1")
    assert report == BuildReport() and nd_report.corrupt == 0  # nothing counted for those
    got = one("p3")  # escaped id: its key is unknown, so no one pass either
    assert got is None
    parsed = [orjson.loads(line) for line in lines["p1"] if not line.endswith(b",")]  # ok JSON
    two = ndjson._records_two_passes("p1", lines["p1"], NdjsonReport(), BuildReport(), [], kwargs)
    assert two == build_patient_records("p1", parsed)


def test_one_pass_counts_corrupt_lines_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "export"
    out.mkdir()
    _write(out / "Patient.ndjson", [patient("p1")])
    _write(out / "Encounter.ndjson", [encounter("e1", "p1")])
    _write(
        out / "Observation.ndjson",
        [observation("o1", "8867-4", 1, 70.0, "/min"), observation("o2", "8867-4", 2, 900.0)],
        [b'{"resourceType":"Observation","id":"o3","subject":{"reference":"Patient/p1"},'],
    )
    nd_report, report = NdjsonReport(), BuildReport()
    records = list(records_from_ndjson(out, ndjson_report=nd_report, build_report=report))
    resources = [r for _, rs in group_by_patient(out) for r in rs]
    assert records == build_records(resources)
    assert nd_report.corrupt == 1 and report.records == 1 and report.patients == 1
    (pid, lines), = ndjson._line_groups(out, types=ndjson.SUPPORTED_TYPES, spill_bytes=1 << 20,
                                        tmp_dir=None, report=NdjsonReport(), shared=[])  # fmt: skip
    one = ndjson._records_one_pass(pid, lines, NdjsonReport(), BuildReport(), [], {})
    assert one is not None and one == records  # this patient was read in one pass
