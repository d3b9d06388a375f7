"""The cohort folder format: write, read back, stream, keep images as references."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moe_core.records import (
    Demographics,
    Event,
    ImageRef,
    Labels,
    Note,
    PatientRecord,
    QualityNote,
)
from training.cohort_images import FileImageLoader
from training.cohort_store import (
    CohortFormatError,
    read_admissions,
    read_records,
    read_summary,
    write_cohort,
)

T0 = datetime(2150, 1, 1, 8, tzinfo=UTC)


def _record(i: int, *, image: ImageRef | None = None) -> PatientRecord:
    return PatientRecord(
        patient_id=f"p{i // 2}",
        encounter_id=f"e{i}",
        anchor_time=T0,
        prediction_time=T0 + timedelta(hours=48),
        static=Demographics(age=50.0 + i, sex="female", race="white", admission_type="urgent"),
        events=[Event(T0 + timedelta(hours=h), "heart_rate", 80.0 + h) for h in range(i % 4)],
        notes=[Note(T0 + timedelta(hours=3), "radiology", f"note {i}")] if i % 3 == 0 else [],
        images=[image] if image is not None else [],
        quality=[QualityNote("chartevents itemid 1", "bad unit", "mg")] if i == 1 else [],
        discharge_time=T0 + timedelta(days=3 + i),
        labels=Labels(mortality=i % 2 == 0, long_los=None, readmission=i == 3),
    )


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    records = [_record(i) for i in range(7)]
    summary = write_cohort(
        iter(records), tmp_path, splits=lambda p: "train", summary={"source": "unit"}, batch_rows=2
    )
    back = list(read_records(tmp_path))
    assert back == records
    assert summary["admissions"] == 7
    assert summary["labels"]["mortality"]["positive"] == 4
    assert summary["labels"]["long_los"]["unknown"] == 7
    assert summary["quality"] == {"bad unit": 1}
    assert read_summary(tmp_path)["source"] == "unit"
    assert (tmp_path / "summary.md").read_text().startswith("# Cohort summary (unit)")


def test_split_filter_and_split_file(tmp_path: Path) -> None:
    records = [_record(i) for i in range(6)]
    splits = {"p0": "train", "p1": "val", "p2": "test"}
    write_cohort(records, tmp_path, splits=splits)
    val = list(read_records(tmp_path, split="val"))
    assert [r.encounter_id for r in val] == ["e2", "e3"]
    assert val == records[2:4]  # children of skipped encounters are not mixed in
    table = read_admissions(tmp_path)
    assert table.column("split").to_pylist() == ["train"] * 2 + ["val"] * 2 + ["test"] * 2


def test_patient_without_split_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CohortFormatError, match="p0"):
        write_cohort([_record(0)], tmp_path, splits={})


def test_availability_patterns_are_counted(tmp_path: Path) -> None:
    summary = write_cohort([_record(i) for i in range(6)], tmp_path, splits=lambda p: "train")
    patterns = summary["availability_patterns"]
    # events for i%4 != 0 (i=1,2,3,5); notes for i=0,3
    assert patterns["E"] == 3 and patterns["E+T"] == 1 and patterns["T"] == 1
    assert patterns["none"] == 1
    assert sum(patterns.values()) == 6


def test_jpeg_image_is_stored_as_reference_and_loaded_lazily(tmp_path: Path) -> None:
    jpg = tmp_path / "cxr.jpg"
    Image.fromarray(np.full((8, 10), 255, dtype=np.uint8)).save(jpg)
    img = ImageRef(T0 + timedelta(hours=2), "AP", "s1", loader=FileImageLoader(jpg))
    write_cohort([_record(0, image=img)], tmp_path / "c", splits=lambda p: "train")
    (back,) = read_records(tmp_path / "c")
    pixels = back.images[0].load()
    assert pixels.shape == (8, 10) and pixels.dtype == np.float32
    assert float(pixels.max()) == pytest.approx(1.0, abs=0.01)
    assert back.present == (False, True, True)


def test_in_memory_pixels_are_saved_beside_the_cohort(tmp_path: Path) -> None:
    pixels = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    img = ImageRef(T0 + timedelta(hours=2), "PA", "s2", pixels=pixels)
    write_cohort([_record(0, image=img)], tmp_path, splits=lambda p: "train")
    (back,) = read_records(tmp_path)
    np.testing.assert_array_equal(back.images[0].load(), pixels)


def test_missing_folder_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CohortFormatError, match=r"admissions\.parquet"):
        read_admissions(tmp_path)
