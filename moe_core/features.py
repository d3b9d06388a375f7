"""Featurisation: ``PatientRecord`` -> ``ModalityBatch``, shared by training and serving.

Every source reaches the model through ``RecordFeaturizer``; nothing here knows about
FHIR or MIMIC. The rules:

* **Time series.** The window is ``[max(anchor_time, prediction_time - 48 h),
  prediction_time)``. Bin ``t`` holds the events in ``[start + t h, start + (t+1) h)``;
  bin 0 is the window start, so a stay shorter than 48 h fills the first bins and leaves
  the rest unobserved. Within a bin the last value (by time, then list order) wins.
  Events outside the window, with an unknown code or a non-finite value are not inputs
  (``featurisation_notes`` lists the last two kinds). Values are normalised with
  ``NormStats``; unobserved cells hold 0 with mask 0 - nothing is imputed.
* **Statics.** Age is normalised with a known-mask; categoricals become vocabulary ids
  via ``FeatureSpec.category_id`` (0 = unknown, also for a vocabulary the spec lacks).
* **Notes.** ``note_text`` joins the notes written before the prediction time, newest
  first (so tokenizer truncation drops the oldest), whitespace collapsed, exact
  duplicates dropped.
* **Images.** ``image_tensor`` is the single resize + normalisation used everywhere.

Cached embeddings: pass ``text_cache`` / ``image_cache`` (a mapping or a callable keyed
by ``text_content_key`` / ``image_content_key``) and the batch carries ``text_emb`` /
``image_emb`` instead of tokens / pixels.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812

from moe_core.batch import ModalityBatch
from moe_core.feature_spec import FeatureSpec, NormStats
from moe_core.modalities import MODALITIES, Modality
from moe_core.records import DEFAULT_WINDOW_HOURS, ImageRef, PatientRecord, QualityNote

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_SIZE",
    "STATIC_CATEGORICAL",
    "STATIC_NUMERIC",
    "WINDOW_HOURS",
    "EmbeddingLookup",
    "FeaturizedBatch",
    "RecordFeaturizer",
    "category_cardinalities",
    "ehr_series",
    "featurisation_notes",
    "hours_covered",
    "image_content_key",
    "image_tensor",
    "label_row",
    "note_text",
    "static_row",
    "text_content_key",
    "window_start",
]

WINDOW_HOURS = DEFAULT_WINDOW_HOURS  # T: hourly bins, the paper's 48 h window
STATIC_NUMERIC: tuple[str, ...] = ("age",)  # columns of ehr_static_num
# Columns of ehr_static_cat; each is also a Demographics attribute and a vocabulary name.
STATIC_CATEGORICAL: tuple[str, ...] = ("sex", "race", "ethnicity", "admission_type")
IMAGE_SIZE = 224  # DenseNet-121 input (paper section 3.2.1)
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
DEFAULT_MAX_TOKENS = 512  # BERT position limit
NOTE_SEPARATOR = "\n\n"
_HOUR = timedelta(hours=1)
_FEATURISER_SOURCE = "featurisation"

# A cached-embedding source: content key -> embedding (None / missing = not cached).
EmbeddingLookup: TypeAlias = (
    Mapping[str, "torch.Tensor | npt.NDArray[np.float32]"]
    | Callable[[str], "torch.Tensor | npt.NDArray[np.float32] | None"]
)


# --------------------------------------------------------------------------- EHR


def window_start(record: PatientRecord) -> datetime:
    """Start of the observation window: the later of admission and prediction - 48 h."""
    return max(record.anchor_time, record.prediction_time - WINDOW_HOURS * _HOUR)


def hours_covered(record: PatientRecord) -> float:
    """Hours of observation window the record spans (0..48), for explanations."""
    span = (record.prediction_time - window_start(record)) / _HOUR
    return float(max(0.0, min(span, float(WINDOW_HOURS))))


def ehr_series(
    record: PatientRecord, spec: FeatureSpec, stats: NormStats
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Normalised hourly values and the observed-mask, each (T=48, F)."""
    if len(stats.mean) != spec.n_features:
        raise ValueError(
            f"NormStats has {len(stats.mean)} features, spec {spec.version} has {spec.n_features}"
        )
    index = spec.index()
    values = np.zeros((WINDOW_HOURS, spec.n_features), dtype=np.float32)  # (T, F)
    mask = np.zeros((WINDOW_HOURS, spec.n_features), dtype=np.float32)  # (T, F)
    start, stop = window_start(record), record.prediction_time
    # A stable sort keeps list order for equal times, so the later-listed value wins.
    for ev in sorted(record.events, key=lambda e: e.time):
        col = index.get(ev.code)
        if col is None or not (start <= ev.time < stop) or not math.isfinite(ev.value):
            continue
        t = int((ev.time - start) // _HOUR)
        if t >= WINDOW_HOURS:  # only reachable with a window longer than 48 h
            continue
        values[t, col] = (ev.value - stats.mean[col]) / stats.std[col]
        mask[t, col] = 1.0
    return values, mask


def featurisation_notes(record: PatientRecord, spec: FeatureSpec) -> list[QualityNote]:
    """Events the featuriser could not use although they fall in the window."""
    index = spec.index()
    start, stop = window_start(record), record.prediction_time
    notes: list[QualityNote] = []
    for ev in record.events:
        if not (start <= ev.time < stop):
            continue
        if ev.code not in index:
            notes.append(QualityNote(_FEATURISER_SOURCE, "feature code not in spec", f"{ev.code}"))
        elif not math.isfinite(ev.value):
            notes.append(QualityNote(_FEATURISER_SOURCE, "non-finite value", f"{ev.code}"))
    return notes


def category_cardinalities(spec: FeatureSpec) -> tuple[int, ...]:
    """Vocabulary size per ``STATIC_CATEGORICAL`` column (1 = only 'unknown')."""
    return tuple(len(spec.static_categories.get(name, ("",))) for name in STATIC_CATEGORICAL)


def static_row(
    record: PatientRecord, spec: FeatureSpec, stats: NormStats
) -> tuple[list[float], list[float], list[int]]:
    """(numeric, numeric known-mask, categorical ids) for one record."""
    age = record.static.age
    known = age is not None and math.isfinite(age)
    num = [(float(age) - stats.age_mean) / stats.age_std if known else 0.0]  # type: ignore[arg-type]
    cats = [
        spec.category_id(name, getattr(record.static, name))
        if name in spec.static_categories
        else 0
        for name in STATIC_CATEGORICAL
    ]
    return num, [1.0 if known else 0.0], cats


def label_row(record: PatientRecord) -> tuple[list[float], list[bool]]:
    """(labels in Task order with 0 for unknown, label known-mask)."""
    raw = record.labels.as_list()
    return [float(bool(v)) for v in raw], [v is not None for v in raw]


# --------------------------------------------------------------------------- text


def note_text(record: PatientRecord) -> str:
    """The note text the model reads: notes before prediction time, newest first."""
    usable = [n for n in record.notes if n.time < record.prediction_time]
    usable.sort(key=lambda n: n.time, reverse=True)
    seen: set[str] = set()
    parts: list[str] = []
    for n in usable:
        text = " ".join(n.text.split())
        if text and text not in seen:
            seen.add(text)
            parts.append(text)
    return NOTE_SEPARATOR.join(parts)


def text_content_key(text: str) -> str:
    """Stable cache key of an assembled note text."""
    return "text:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- image


def image_tensor(pixels: npt.NDArray[Any]) -> torch.Tensor:
    """(H, W) pixels in [0, 1] -> (3, 224, 224) ImageNet-normalised tensor.

    Raises ``ValueError`` for non-2-D, empty or non-finite input.
    """
    arr = np.asarray(pixels)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"image pixels must be a non-empty 2-D array, got shape {arr.shape}")
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if not bool(torch.isfinite(x).all()):
        raise ValueError("image pixels contain NaN or infinite values")
    x = x.clamp(0.0, 1.0)[None, None]  # (1, 1, H, W)
    x = F.interpolate(
        x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False, antialias=True
    )
    x = x[0].expand(3, IMAGE_SIZE, IMAGE_SIZE)  # (3, 224, 224)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((x - mean) / std).contiguous()


def image_content_key(ref: ImageRef, pixels: npt.NDArray[Any] | None = None) -> str:
    """``ImageRef.content_key`` when set, else a hash of the pixels (loaded if needed)."""
    if ref.content_key:
        return ref.content_key
    arr = np.ascontiguousarray(ref.load() if pixels is None else pixels, dtype=np.float32)
    h = hashlib.sha256(str(arr.shape).encode())
    h.update(arr.tobytes())
    return "pixels:" + h.hexdigest()


# --------------------------------------------------------------------------- batching


def _lookup(cache: EmbeddingLookup, key: str) -> torch.Tensor | None:
    found = cache.get(key) if isinstance(cache, Mapping) else cache(key)
    if found is None:
        return None
    return torch.as_tensor(found, dtype=torch.float32).reshape(-1)


@dataclass(slots=True)
class FeaturizedBatch:
    """A batch plus, per record, what featurisation could not use."""

    batch: ModalityBatch
    notes: list[list[QualityNote]] = field(default_factory=list)


class RecordFeaturizer:
    """Collates ``PatientRecord``s into a ``ModalityBatch``.

    ``tokenizer`` (a Hugging Face tokenizer) produces ``text_ids``/``text_mask``;
    ``text_cache``/``image_cache`` produce ``text_emb``/``image_emb`` instead. A cache
    that misses raises ``KeyError`` naming the encounter. With neither tokenizer nor
    text cache the batch carries no text input (the model then refuses text-present rows).
    """

    def __init__(
        self,
        spec: FeatureSpec,
        stats: NormStats,
        tokenizer: Any | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        text_cache: EmbeddingLookup | None = None,
        image_cache: EmbeddingLookup | None = None,
    ) -> None:
        if stats.spec_version != spec.version:
            raise ValueError(
                f"NormStats were fitted for spec {stats.spec_version!r}, not {spec.version!r}"
            )
        if len(stats.mean) != spec.n_features:
            raise ValueError(
                f"NormStats has {len(stats.mean)} features, spec has {spec.n_features}"
            )
        if max_tokens < 2:
            raise ValueError(f"max_tokens must be >= 2, got {max_tokens}")
        self.spec = spec
        self.stats = stats
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.text_cache = text_cache
        self.image_cache = image_cache

    def __call__(self, records: Sequence[PatientRecord]) -> ModalityBatch:
        return self.featurize(records).batch

    def featurize(self, records: Sequence[PatientRecord]) -> FeaturizedBatch:
        """The batch and per-record quality notes (unusable events, unreadable images)."""
        if not records:
            raise ValueError("cannot featurise an empty list of records")
        n = len(records)
        values = np.zeros((n, WINDOW_HOURS, self.spec.n_features), dtype=np.float32)
        masks = np.zeros_like(values)  # (B, T, F)
        nums: list[list[float]] = []
        num_masks: list[list[float]] = []
        cats: list[list[int]] = []
        labels: list[list[float]] = []
        label_masks: list[list[bool]] = []
        present = torch.zeros(n, len(MODALITIES), dtype=torch.bool)
        notes: list[list[QualityNote]] = []
        for i, rec in enumerate(records):
            values[i], masks[i] = ehr_series(rec, self.spec, self.stats)
            num, num_mask, cat = static_row(rec, self.spec, self.stats)
            nums.append(num)
            num_masks.append(num_mask)
            cats.append(cat)
            lab, lab_mask = label_row(rec)
            labels.append(lab)
            label_masks.append(lab_mask)
            present[i] = torch.tensor(rec.present)
            notes.append(featurisation_notes(rec, self.spec))

        extra: dict[str, torch.Tensor | None] = {}
        extra.update(self._text(records, present))
        extra.update(self._images(records, present, notes))
        batch = ModalityBatch(
            ehr_static_num=torch.tensor(nums, dtype=torch.float32),  # (B, S)
            ehr_static_num_mask=torch.tensor(num_masks, dtype=torch.float32),  # (B, S)
            ehr_static_cat=torch.tensor(cats, dtype=torch.long),  # (B, C)
            ehr_values=torch.from_numpy(values),  # (B, T, F)
            ehr_mask=torch.from_numpy(masks),  # (B, T, F)
            present=present,  # (B, 3)
            labels=torch.tensor(labels, dtype=torch.float32),  # (B, 3)
            label_mask=torch.tensor(label_masks, dtype=torch.bool),  # (B, 3)
            keys=[r.encounter_id for r in records],
            **extra,
        )
        return FeaturizedBatch(batch, notes)

    def _text(
        self, records: Sequence[PatientRecord], present: torch.Tensor
    ) -> dict[str, torch.Tensor | None]:
        col = int(Modality.TEXT)
        texts = [note_text(r) if bool(present[i, col]) else "" for i, r in enumerate(records)]
        if self.text_cache is not None:
            embs: list[torch.Tensor | None] = []
            for rec, text in zip(records, texts, strict=True):
                if not text:
                    embs.append(None)
                    continue
                emb = _lookup(self.text_cache, text_content_key(text))
                if emb is None:
                    raise KeyError(
                        f"no cached text embedding for encounter {rec.encounter_id} "
                        f"(key {text_content_key(text)})"
                    )
                embs.append(emb)
            return {"text_emb": _stack_with_zeros(embs)}
        if self.tokenizer is None:
            return {}
        enc = self.tokenizer(
            texts,
            padding="longest",
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        )
        return {
            "text_ids": enc["input_ids"].long(),  # (B, L)
            "text_mask": enc["attention_mask"].long(),  # (B, L)
        }

    def _images(
        self,
        records: Sequence[PatientRecord],
        present: torch.Tensor,
        notes: list[list[QualityNote]],
    ) -> dict[str, torch.Tensor | None]:
        col = int(Modality.IMAGE)
        tensors: list[torch.Tensor | None] = []
        for i, rec in enumerate(records):
            ref = rec.frontal_image() if bool(present[i, col]) else None
            if ref is None:
                tensors.append(None)
                continue
            try:
                if self.image_cache is not None:
                    key = image_content_key(ref)
                    emb = _lookup(self.image_cache, key)
                    if emb is None:
                        raise KeyError(
                            f"no cached image embedding for encounter {rec.encounter_id} "
                            f"(study {ref.study_id}, key {key})"
                        )
                    tensors.append(emb)
                else:
                    tensors.append(image_tensor(ref.load()))
            except (ValueError, OSError) as exc:
                # An unreadable image makes the modality absent, recorded, not a crash.
                present[i, col] = False
                notes[i].append(QualityNote(f"image {ref.study_id}", "unreadable image", str(exc)))
                tensors.append(None)
        if not any(t is not None for t in tensors):
            return {}
        name = "image_emb" if self.image_cache is not None else "image"
        return {name: _stack_with_zeros(tensors)}


def _stack_with_zeros(items: list[torch.Tensor | None]) -> torch.Tensor | None:
    """Stack per-row tensors, zeros for absent rows; None when every row is absent."""
    ref = next((t for t in items if t is not None), None)
    if ref is None:
        return None
    for t in items:
        if t is not None and t.shape != ref.shape:
            raise ValueError(f"cached embeddings differ in shape: {t.shape} vs {ref.shape}")
    return torch.stack([t if t is not None else torch.zeros_like(ref) for t in items])
