"""Featuriser: binning, normalisation, masks, notes, images, statics, labels, caches."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest
import torch

from moe_core.feature_spec import FeatureSpec, NormStats
from moe_core.features import (
    IMAGE_SIZE,
    STATIC_CATEGORICAL,
    WINDOW_HOURS,
    RecordFeaturizer,
    ehr_series,
    featurisation_notes,
    hours_covered,
    image_content_key,
    image_tensor,
    note_text,
    static_row,
    text_content_key,
)
from moe_core.modalities import Modality, Task
from moe_core.records import Demographics, Event, ImageRef, Labels, Note, PatientRecord

from .conftest import HOUR, T0, make_record

HR, GLU = 0, 1


def _bare(hours: float = 48, events: list[Event] | None = None) -> PatientRecord:
    return PatientRecord("p", "e", T0, T0 + timedelta(hours=hours), events=events or [])


def test_event_at_bin_boundary_goes_to_the_later_bin(spec: FeatureSpec, stats: NormStats) -> None:
    rec = _bare(events=[Event(T0 + 3 * HOUR, "heart_rate", 90.0)])
    values, mask = ehr_series(rec, spec, stats)
    assert values.shape == (WINDOW_HOURS, 2)
    assert mask[3, HR] == 1 and mask[2, HR] == 0
    assert values[3, HR] == pytest.approx((90 - 80) / 10)
    assert mask.sum() == 1


def test_last_value_in_an_hour_wins(spec: FeatureSpec, stats: NormStats) -> None:
    rec = _bare(
        events=[
            Event(T0 + timedelta(minutes=50), "heart_rate", 120.0),
            Event(T0 + timedelta(minutes=10), "heart_rate", 60.0),
            Event(T0 + timedelta(minutes=50), "heart_rate", 100.0),  # same time, listed later
        ]
    )
    values, mask = ehr_series(rec, spec, stats)
    assert values[0, HR] == pytest.approx((100 - 80) / 10)
    assert mask[:, HR].sum() == 1


def test_events_at_or_after_prediction_time_are_ignored(
    spec: FeatureSpec, stats: NormStats
) -> None:
    rec = _bare(
        hours=10,
        events=[
            Event(T0 + 10 * HOUR, "heart_rate", 150.0),  # exactly at prediction time
            Event(T0 + 11 * HOUR, "glucose", 300.0),
            Event(T0 + 9.99 * HOUR, "glucose", 120.0),
        ],
    )
    _, mask = ehr_series(rec, spec, stats)
    assert mask[:, HR].sum() == 0
    assert mask[9, GLU] == 1 and mask.sum() == 1


def test_events_before_admission_are_ignored(spec: FeatureSpec, stats: NormStats) -> None:
    rec = _bare(events=[Event(T0 - 0.5 * HOUR, "heart_rate", 70.0)])
    _, mask = ehr_series(rec, spec, stats)
    assert mask.sum() == 0


def test_long_stay_uses_the_last_48_hours(spec: FeatureSpec, stats: NormStats) -> None:
    # prediction 100 h after admission: window starts at 52 h
    rec = _bare(
        hours=100,
        events=[Event(T0 + 51 * HOUR, "heart_rate", 70.0), Event(T0 + 52 * HOUR, "glucose", 90.0)],
    )
    _, mask = ehr_series(rec, spec, stats)
    assert mask[0, GLU] == 1 and mask.sum() == 1
    assert hours_covered(rec) == 48


def test_short_stay_fills_leading_bins(spec: FeatureSpec, stats: NormStats) -> None:
    rec = _bare(hours=5.5, events=[Event(T0 + 5.2 * HOUR, "heart_rate", 80.0)])
    values, mask = ehr_series(rec, spec, stats)
    assert mask[5, HR] == 1 and values[5, HR] == 0.0
    assert hours_covered(rec) == pytest.approx(5.5)


def test_unknown_code_and_nan_value_are_noted_not_used(spec: FeatureSpec, stats: NormStats) -> None:
    rec = _bare(
        events=[Event(T0 + HOUR, "lactate", 2.0), Event(T0 + HOUR, "heart_rate", float("nan"))]
    )
    _, mask = ehr_series(rec, spec, stats)
    assert mask.sum() == 0
    reasons = sorted(n.reason for n in featurisation_notes(rec, spec))
    assert reasons == ["feature code not in spec", "non-finite value"]


def test_unknown_categoricals_map_to_zero(spec: FeatureSpec, stats: NormStats) -> None:
    rec = replace(
        _bare(),
        static=Demographics(age=None, sex="Female ", race="martian", ethnicity="unknown"),
    )
    num, num_mask, cats = static_row(rec, spec, stats)
    assert num == [0.0] and num_mask == [0.0]
    by_name = dict(zip(STATIC_CATEGORICAL, cats, strict=True))
    assert by_name == {"sex": 1, "race": 0, "ethnicity": 0, "admission_type": 0}


def test_age_is_normalised_with_known_mask(spec: FeatureSpec, stats: NormStats) -> None:
    rec = replace(_bare(), static=Demographics(age=75.0))
    num, num_mask, _ = static_row(rec, spec, stats)
    assert num == [pytest.approx(1.5)] and num_mask == [1.0]


def test_note_text_newest_first_whitespace_collapsed_duplicates_dropped() -> None:
    rec = replace(
        _bare(hours=10),
        notes=[
            Note(T0 + HOUR, "nursing", "old   note\n\twith  gaps"),
            Note(T0 + 2 * HOUR, "radiology", "newer note"),
            Note(T0 + 3 * HOUR, "radiology", " newer   note "),  # duplicate after collapsing
            Note(T0 + 10 * HOUR, "physician", "written at prediction time"),
            Note(T0 + 4 * HOUR, "other", "   "),
        ],
    )
    assert note_text(rec) == "newer note\n\nold note with gaps"


def test_note_text_is_empty_without_usable_notes() -> None:
    assert note_text(_bare()) == ""


def test_image_tensor_shape_and_imagenet_normalisation() -> None:
    x = image_tensor(np.full((300, 170), 0.5, dtype=np.float32))
    assert x.shape == (3, IMAGE_SIZE, IMAGE_SIZE)
    assert x[0, 0, 0].item() == pytest.approx((0.5 - 0.485) / 0.229, abs=1e-5)
    assert x[2, 100, 100].item() == pytest.approx((0.5 - 0.406) / 0.225, abs=1e-5)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4, 3), np.float32), np.zeros((0, 5), np.float32), np.full((4, 4), np.nan)],
)
def test_image_tensor_rejects_bad_pixels(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        image_tensor(bad)


def test_batch_shapes_present_and_labels(spec: FeatureSpec, stats: NormStats) -> None:
    recs = [make_record("a"), make_record("b", text=False, image=False)]
    batch = RecordFeaturizer(spec, stats)(recs)
    assert batch.ehr_values.shape == (2, WINDOW_HOURS, 2)
    assert batch.ehr_static_cat.shape == (2, len(STATIC_CATEGORICAL))
    assert batch.present.tolist() == [[True, True, True], [True, False, False]]
    assert batch.image is not None and batch.image.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert float(batch.image[1].abs().sum()) == 0.0
    assert batch.text_ids is None and batch.text_emb is None
    assert batch.labels is not None and batch.label_mask is not None
    assert batch.labels[0].tolist() == [0.0, 1.0, 0.0]
    assert batch.label_mask[0].tolist() == [True, True, False]
    assert batch.keys == ["a", "b"]


def test_all_missing_record_gives_empty_row(spec: FeatureSpec, stats: NormStats) -> None:
    rec = make_record("none", ehr=False, text=False, image=False, labels=Labels())
    batch = RecordFeaturizer(spec, stats)([rec])
    assert batch.present.tolist() == [[False, False, False]]
    assert float(batch.ehr_mask.sum()) == 0.0 and float(batch.ehr_values.abs().sum()) == 0.0
    assert batch.image is None and batch.image_emb is None
    assert batch.label_mask is not None and not bool(batch.label_mask.any())


def test_unreadable_image_becomes_absent_with_quality_note(
    spec: FeatureSpec, stats: NormStats
) -> None:
    rec = make_record("x")
    rec.images = [ImageRef(T0, "PA", "broken", pixels=np.full((8, 8), np.inf, np.float32))]
    out = RecordFeaturizer(spec, stats).featurize([rec])
    assert out.batch.present[0, Modality.IMAGE].item() is False
    assert [n.reason for n in out.notes[0]] == ["unreadable image"]


def test_cached_embeddings_replace_raw_inputs(spec: FeatureSpec, stats: NormStats) -> None:
    recs = [make_record("a"), make_record("b", text=False, image=False)]
    text_key = text_content_key(note_text(recs[0]))
    text_cache = {text_key: np.arange(4, dtype=np.float32)}
    image_cache = lambda key: torch.ones(6) if key == image_content_key(recs[0].images[0]) else None  # noqa: E731
    batch = RecordFeaturizer(spec, stats, text_cache=text_cache, image_cache=image_cache)(recs)
    assert batch.image is None and batch.text_ids is None
    assert batch.text_emb is not None and batch.text_emb.tolist()[0] == [0, 1, 2, 3]
    assert batch.text_emb[1].abs().sum() == 0
    assert batch.image_emb is not None and batch.image_emb.shape == (2, 6)


def test_cache_miss_names_the_encounter(spec: FeatureSpec, stats: NormStats) -> None:
    with pytest.raises(KeyError, match="enc-9"):
        RecordFeaturizer(spec, stats, text_cache={})([make_record("enc-9")])


def test_image_content_key_prefers_ref_key_else_hashes_pixels() -> None:
    px = np.zeros((3, 3), np.float32)
    assert image_content_key(ImageRef(T0, "AP", "s", pixels=px, content_key="sha:1")) == "sha:1"
    k1 = image_content_key(ImageRef(T0, "AP", "s", pixels=px))
    k2 = image_content_key(ImageRef(T0, "AP", "s", pixels=px + 1))
    assert k1 != k2 and k1.startswith("pixels:")


def test_tokenizer_produces_ids_and_mask(spec: FeatureSpec, stats: NormStats) -> None:
    from transformers import AutoTokenizer

    from moe_core.encoders.text import default_text_encoder_path

    tok = AutoTokenizer.from_pretrained(str(default_text_encoder_path()), local_files_only=True)
    recs = [make_record("a"), make_record("b", text=False)]
    batch = RecordFeaturizer(spec, stats, tokenizer=tok, max_tokens=8)(recs)
    assert batch.text_ids is not None and batch.text_mask is not None
    assert batch.text_ids.shape[0] == 2 and batch.text_ids.shape[1] <= 8


def test_stats_for_another_spec_are_refused(spec: FeatureSpec) -> None:
    with pytest.raises(ValueError, match="other"):
        RecordFeaturizer(spec, NormStats("other", (0.0, 0.0), (1.0, 1.0)))


def test_task_order_of_labels(spec: FeatureSpec, stats: NormStats) -> None:
    rec = make_record("a", labels=Labels(mortality=True, long_los=None, readmission=False))
    batch = RecordFeaturizer(spec, stats)([rec])
    assert batch.labels is not None and batch.label_mask is not None
    assert batch.labels[0, Task.MORTALITY] == 1.0
    assert batch.label_mask[0].tolist() == [True, False, True]


def test_default_spec_vocabularies_cover_every_static_column() -> None:
    from moe_core.feature_catalog import DEFAULT_SPEC

    assert set(STATIC_CATEGORICAL) <= set(DEFAULT_SPEC.static_categories)
    rec = make_record("a")
    code = DEFAULT_SPEC.codes[0]
    rec.events = [Event(T0 + HOUR, code, 1.0)]
    batch = RecordFeaturizer(DEFAULT_SPEC, NormStats.identity(DEFAULT_SPEC))([rec])
    assert batch.ehr_values.shape == (1, WINDOW_HOURS, DEFAULT_SPEC.n_features)
    assert batch.ehr_mask[0, 1, 0] == 1.0
    assert (batch.ehr_static_cat[0] > 0).tolist() == [True, True, False, True]


def test_gcs_total_is_derived_from_parts_charted_together() -> None:
    """MIMIC never charts a total; FHIR may: both must see eye + motor + verbal."""
    from moe_core.feature_catalog import DEFAULT_SPEC

    t1, t2, t3 = T0 + HOUR, T0 + 2 * HOUR, T0 + 3 * HOUR
    events = [
        Event(t1, "gcs_eye", 3.0), Event(t1, "gcs_motor", 5.0), Event(t1, "gcs_verbal", 4.0),
        Event(t2, "gcs_total", 9.0), Event(t2, "gcs_eye", 4.0), Event(t2, "gcs_motor", 6.0),
        Event(t2, "gcs_verbal", 5.0),  # a charted total wins at its instant
        Event(t3, "gcs_eye", 2.0), Event(t3, "gcs_motor", 4.0),  # no verbal: no total
    ]  # fmt: skip
    rec = _bare(events=events)
    totals = [(e.time, e.value) for e in rec.events if e.code == "gcs_total"]
    assert totals == [(t1, 12.0), (t2, 9.0)]
    assert [(e.time, e.code) for e in rec.events] == sorted((e.time, e.code) for e in rec.events)
    again = PatientRecord("p", "e", T0, T0 + 48 * HOUR, events=list(rec.events))
    assert again.events == rec.events  # idempotent (records read back from a cohort store)
    batch = RecordFeaturizer(DEFAULT_SPEC, NormStats.identity(DEFAULT_SPEC))([rec])
    col = DEFAULT_SPEC.index()["gcs_total"]
    assert batch.ehr_mask[0, 1, col] == 1.0 and batch.ehr_values[0, 1, col] == 12.0
    assert batch.ehr_mask[0, 3, col] == 0.0
