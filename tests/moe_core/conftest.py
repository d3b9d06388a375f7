"""Small hand-made specs and records for the model-core tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from moe_core.feature_spec import FeatureDef, FeatureSpec, NormStats
from moe_core.records import (
    UNKNOWN,
    Demographics,
    Event,
    ImageRef,
    Labels,
    Note,
    PatientRecord,
)

T0 = datetime(2150, 3, 1, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def tiny_spec(version: str = "test-1") -> FeatureSpec:
    """Two features and the four static vocabularies."""
    return FeatureSpec(
        version=version,
        features=(
            FeatureDef("heart_rate", "Heart rate", "/min", ("8867-4",), (220045,), (0, 350)),
            FeatureDef("glucose", "Glucose", "mg/dL", ("2345-7",), (50931,), (0, 3000)),
        ),
        static_categories={
            "sex": (UNKNOWN, "female", "male"),
            "race": (UNKNOWN, "white", "black"),
            "ethnicity": (UNKNOWN, "hispanic", "not_hispanic"),
            "admission_type": (UNKNOWN, "emergency", "elective"),
        },
    )


def make_record(
    key: str = "enc-1",
    *,
    ehr: bool = True,
    text: bool = True,
    image: bool = True,
    hours: float = 48,
    labels: Labels | None = None,
) -> PatientRecord:
    """A record with the requested modalities, prediction time ``hours`` after admission."""
    pred = T0 + timedelta(hours=hours)
    events = (
        [Event(T0 + 0.5 * HOUR, "heart_rate", 80.0), Event(T0 + 2.5 * HOUR, "glucose", 110.0)]
        if ehr
        else []
    )
    notes = [Note(T0 + HOUR, "nursing", f"patient {key} comfortable, no distress")] if text else []
    rng = np.random.default_rng(sum(map(ord, key)))
    images = (
        [
            ImageRef(
                T0 + HOUR,
                "AP",
                f"study-{key}",
                pixels=rng.random((40, 32), dtype=np.float32),
            )
        ]
        if image
        else []
    )
    return PatientRecord(
        patient_id=f"p-{key}",
        encounter_id=key,
        anchor_time=T0,
        prediction_time=pred,
        static=Demographics(age=70.0, sex="female", race="white", admission_type="emergency"),
        events=events,
        notes=notes,
        images=images,
        labels=labels or Labels(mortality=False, long_los=True, readmission=None),
    )


@pytest.fixture
def spec() -> FeatureSpec:
    return tiny_spec()


@pytest.fixture
def stats(spec: FeatureSpec) -> NormStats:
    return NormStats(spec.version, (80.0, 100.0), (10.0, 20.0), 60.0, 10.0)
