"""The shared contracts: record availability, feature conversions, batch validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import torch

from moe_core.batch import ModalityBatch
from moe_core.feature_spec import FeatureDef, FeatureSpec, NormStats, UnitConversion
from moe_core.modalities import AVAILABILITY_PATTERNS, pattern_name
from moe_core.records import UNKNOWN, Event, ImageRef, Note, PatientRecord

T0 = datetime(2150, 1, 1, 8, 0, tzinfo=UTC)

TEMP = FeatureDef(
    code="temperature",
    name="Temperature",
    unit="Cel",
    loinc=("8310-5",),
    itemids=(223762,),
    plausible=(25.0, 45.0),
    conversions=(UnitConversion(("[degF]", "degF", "°F"), 5 / 9, -160 / 9),),
)


def _record(**kw: object) -> PatientRecord:
    return PatientRecord("p1", "e1", T0, T0 + timedelta(hours=48), **kw)  # type: ignore[arg-type]


def test_there_are_seven_non_empty_availability_patterns() -> None:
    assert len(AVAILABILITY_PATTERNS) == 7
    assert len(set(AVAILABILITY_PATTERNS)) == 7
    assert pattern_name((True, False, True)) == "E+I"
    assert pattern_name((False, False, False)) == "none"


def test_present_ignores_data_after_prediction_time() -> None:
    late = T0 + timedelta(hours=49)
    rec = _record(
        events=[Event(late, "temperature", 37.0)],
        notes=[Note(late, "radiology", "opacity")],
        images=[ImageRef(late, "AP", "s1", pixels=np.zeros((4, 4), np.float32))],
    )
    assert rec.present == (False, False, False)


def test_frontal_image_prefers_ap_over_earlier_pa() -> None:
    px = np.zeros((2, 2), np.float32)
    pa = ImageRef(T0 + timedelta(hours=1), "PA", "pa", pixels=px)
    ap = ImageRef(T0 + timedelta(hours=5), "AP", "ap", pixels=px)
    lat = ImageRef(T0, "LL", "lat", pixels=px)
    rec = _record(images=[lat, pa, ap])
    assert rec.frontal_image() is ap
    assert _record(images=[lat]).frontal_image() is None


def test_blank_note_does_not_count_as_text() -> None:
    assert _record(notes=[Note(T0, "nursing", "   ")]).present[1] is False


def test_temperature_in_fahrenheit_is_converted() -> None:
    assert TEMP.to_canonical(98.6, "[degF]") == pytest.approx(37.0)
    assert TEMP.to_canonical(37.0, "Cel") == 37.0
    assert TEMP.to_canonical(37.0, "") == 37.0
    assert TEMP.to_canonical(37.0, "furlong") is None


def test_feature_spec_rejects_a_loinc_code_claimed_twice() -> None:
    other = FeatureDef("temp2", "T2", "Cel", ("8310-5",), (), (25.0, 45.0))
    with pytest.raises(ValueError, match="8310-5"):
        FeatureSpec("t", (TEMP, other), {"sex": (UNKNOWN, "female", "male")})


def test_unknown_category_maps_to_zero() -> None:
    spec = FeatureSpec("t", (TEMP,), {"sex": (UNKNOWN, "female", "male")})
    assert spec.category_id("sex", "Male") == 2
    assert spec.category_id("sex", "martian") == 0
    assert spec.category_id("sex", None) == 0


def test_norm_stats_fit_uses_only_given_values_and_round_trips() -> None:
    spec = FeatureSpec("t", (TEMP,), {"sex": (UNKNOWN,)})
    stats = NormStats.fit(spec, {"temperature": [36.0, 38.0]}, ages=[50, 70])
    assert stats.mean == (37.0,)
    assert stats.std == (1.0,)
    assert stats.age_mean == 60.0
    assert NormStats.from_dict(stats.to_dict()) == stats


def _batch(b: int) -> ModalityBatch:
    return ModalityBatch(
        ehr_static_num=torch.zeros(b, 1),
        ehr_static_num_mask=torch.zeros(b, 1),
        ehr_static_cat=torch.zeros(b, 4, dtype=torch.long),
        ehr_values=torch.zeros(b, 48, 3),
        ehr_mask=torch.zeros(b, 48, 3),
        present=torch.ones(b, 3, dtype=torch.bool),
        keys=[f"k{i}" for i in range(b)],
    )


def test_batch_rejects_rows_that_disagree() -> None:
    with pytest.raises(ValueError, match="rows"):
        ModalityBatch(
            ehr_static_num=torch.zeros(2, 1),
            ehr_static_num_mask=torch.zeros(2, 1),
            ehr_static_cat=torch.zeros(3, 4, dtype=torch.long),
            ehr_values=torch.zeros(2, 48, 3),
            ehr_mask=torch.zeros(2, 48, 3),
            present=torch.ones(2, 3, dtype=torch.bool),
        )


def test_batch_labels_need_a_mask() -> None:
    with pytest.raises(ValueError, match="label_mask"):
        ModalityBatch(
            ehr_static_num=torch.zeros(2, 1),
            ehr_static_num_mask=torch.zeros(2, 1),
            ehr_static_cat=torch.zeros(2, 4, dtype=torch.long),
            ehr_values=torch.zeros(2, 48, 3),
            ehr_mask=torch.zeros(2, 48, 3),
            present=torch.ones(2, 3, dtype=torch.bool),
            labels=torch.zeros(2, 3),
        )


def test_batch_select_keeps_keys_aligned() -> None:
    sub = _batch(4).select(torch.tensor([False, True, False, True]))
    assert sub.size == 2
    assert sub.keys == ["k1", "k3"]
