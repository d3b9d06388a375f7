"""RiskAssessment builder, validated against the FHIR R4B models."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.riskassessment import RiskAssessment

from fhir_adapters.risk_assessment import risk_assessment, transaction_bundle
from moe_core.modalities import Modality, Task

WHEN = datetime(2150, 3, 3, 8, 0, tzinfo=UTC)


def _ra(**kw: object) -> dict[str, object]:
    args: dict[str, object] = {
        "patient_id": "p1",
        "encounter_id": "e1",
        "occurrence": WHEN,
        "risks": {Task.MORTALITY: 0.12, Task.LONG_LOS: 0.5, Task.READMISSION: 0.03},
        "model_name": "moe-health",
        "model_version": "1.0.0",
        "modalities_used": [Modality.EHR, Modality.TEXT],
        "modalities_missing": [Modality.IMAGE],
        "gate_weights": {"ehr": 0.7, "text": 0.3},
    }
    args.update(kw)
    return risk_assessment(**args)  # type: ignore[arg-type]


def test_risk_assessment_validates_as_r4b() -> None:
    ra = _ra()
    model = RiskAssessment.model_validate(ra)
    assert model.subject.reference == "Patient/p1"
    assert model.prediction is not None
    assert [float(p.probabilityDecimal or -1) for p in model.prediction] == [0.12, 0.5, 0.03]
    assert model.method is not None and model.method.text is not None
    assert "modalities used: ehr, text" in model.method.text
    assert ra["note"][0]["text"] == "Missing modalities: image"  # type: ignore[index]


def test_id_is_stable_and_bundle_validates() -> None:
    a, b = _ra(), _ra()
    assert a["id"] == b["id"]
    assert _ra(model_version="2")["id"] != a["id"]
    bundle = transaction_bundle([a, _ra(encounter_id="e2")])
    parsed = Bundle.model_validate(bundle)
    assert parsed.type == "transaction"
    assert parsed.entry is not None
    assert [e.request.method for e in parsed.entry if e.request] == ["PUT", "PUT"]


def test_bad_probability_and_naive_time_are_rejected() -> None:
    with pytest.raises(ValueError, match="probability"):
        _ra(risks={Task.MORTALITY: 1.5})
    with pytest.raises(ValueError, match="timezone"):
        _ra(occurrence=datetime(2150, 1, 1))
