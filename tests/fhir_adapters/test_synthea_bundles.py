"""The 40 Synthea R4 transaction bundles read into records."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson

from fhir_adapters.record import BuildReport, build_records


def test_synthea_bundles_read_into_records(shared_data: Path) -> None:
    bundles = sorted((shared_data / "synthea-r4").glob("*.json"))
    assert len(bundles) == 40
    report = BuildReport()
    codes: Counter[str] = Counter()
    n_records = 0
    for path in bundles:
        bundle = orjson.loads(path.read_bytes())
        records = build_records([e["resource"] for e in bundle["entry"]], report=report)
        assert records, path.name  # every bundle has an inpatient encounter
        n_records += len(records)
        for r in records:
            assert r.static.sex in {"female", "male"} and r.static.age is not None
            assert all(r.anchor_time <= e.time < r.prediction_time for e in r.events)
            codes.update(e.code for e in r.events)
    assert report.malformed == 0 and report.patients == 40
    assert n_records == report.records >= 40
    # Synthea charts labs in its inpatient stays; vitals only at other encounters
    for code in ("glucose", "creatinine", "sodium", "potassium", "bicarbonate", "bun"):
        assert codes[code] > 0, code
    bundle = orjson.loads(bundles[0].read_bytes())
    every = build_records([e["resource"] for e in bundle["entry"]], inpatient_only=False)
    vitals = {e.code for r in every for e in r.events}
    assert {"systolic_bp", "diastolic_bp", "weight", "height"} <= vitals
