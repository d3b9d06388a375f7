"""FHIR times: partial dates are the start of their period for anchors, the end for inputs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fhir_adapters.fhir_time import parse_fhir_datetime, parse_fhir_input_time
from fhir_adapters.imaging.source import study_time

END_OF = datetime(1, 1, 1, 23, 59, 59, 999999).time()


@pytest.mark.parametrize(
    ("value", "start", "end"),
    [
        ("2150", datetime(2150, 1, 1, tzinfo=UTC), datetime.combine(
            datetime(2150, 12, 31), END_OF, tzinfo=UTC)),
        ("2152-02", datetime(2152, 2, 1, tzinfo=UTC), datetime.combine(
            datetime(2152, 2, 29), END_OF, tzinfo=UTC)),  # leap year
        ("2150-03-03", datetime(2150, 3, 3, tzinfo=UTC), datetime.combine(
            datetime(2150, 3, 3), END_OF, tzinfo=UTC)),
    ],
)  # fmt: skip
def test_partial_dates_start_for_anchors_and_end_for_inputs(
    value: str, start: datetime, end: datetime
) -> None:
    assert parse_fhir_datetime(value) == start
    assert parse_fhir_input_time(value) == end


def test_full_date_times_are_the_same_either_way() -> None:
    value = "2150-03-03T10:15:00+02:00"
    expected = datetime(2150, 3, 3, 8, 15, tzinfo=UTC)
    assert parse_fhir_datetime(value) == parse_fhir_input_time(value) == expected
    assert parse_fhir_input_time("2150-03-03T10:15:00") == datetime(2150, 3, 3, 10, 15, tzinfo=UTC)
    assert parse_fhir_input_time("2150-13") is None and parse_fhir_input_time(None) is None


def test_imaging_study_time_uses_the_shared_input_rule() -> None:
    assert study_time({"started": "2150-03"}) == parse_fhir_input_time("2150-03")
