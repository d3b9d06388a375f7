"""Cohort splits as model-ready tensors: normalisation statistics and featurised splits.

``fit_norm_stats`` streams the training split once (running sums, constant memory) and
fits ``NormStats`` on the in-window values only - never on validation or test data.
``FeaturizedSplit`` holds a whole split's ``ModalityBatch`` tensors (cached text and
image embeddings in place of tokens and pixels), so an epoch is pure tensor indexing.
``RecordSplit`` keeps the records instead and featurises per batch (end-to-end
fine-tuning, where encoders see tokens and pixels).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from moe_core.batch import ModalityBatch
from moe_core.feature_spec import FeatureSpec, NormStats
from moe_core.features import RecordFeaturizer, window_start
from moe_core.modalities import AVAILABILITY_PATTERNS, TASKS
from moe_core.records import PatientRecord

__all__ = [
    "FeaturizedSplit",
    "NormAccumulator",
    "RecordSplit",
    "SplitBuilder",
    "fit_norm_stats",
    "label_rates",
    "patterns_seen",
]

_CHUNK = 512


class NormAccumulator:
    """Running sums of in-window values per feature and of ages (constant memory)."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.index = spec.index()
        self.n = [0] * spec.n_features
        self.s = [0.0] * spec.n_features
        self.ss = [0.0] * spec.n_features
        self.ages: list[float] = []

    def add(self, rec: PatientRecord) -> None:
        start, stop = window_start(rec), rec.prediction_time
        for ev in rec.events:
            col = self.index.get(ev.code)
            if col is None or not (start <= ev.time < stop) or not math.isfinite(ev.value):
                continue
            self.n[col] += 1
            self.s[col] += ev.value
            self.ss[col] += ev.value * ev.value
        if rec.static.age is not None and math.isfinite(rec.static.age):
            self.ages.append(float(rec.static.age))

    def result(self) -> NormStats:
        """Mean/std per feature (0/1 when never observed) and of age."""
        means, stds = [], []
        for c in range(self.spec.n_features):
            if self.n[c] == 0:
                means.append(0.0)
                stds.append(1.0)
                continue
            m = self.s[c] / self.n[c]
            var = max(self.ss[c] / self.n[c] - m * m, 0.0)
            means.append(m)
            stds.append(math.sqrt(var) if var > 1e-12 else 1.0)
        ages = NormStats.fit(self.spec, {}, self.ages)  # age statistics and their defaults
        return NormStats(self.spec.version, tuple(means), tuple(stds), ages.age_mean, ages.age_std)


def fit_norm_stats(spec: FeatureSpec, train_records: Iterable[PatientRecord]) -> NormStats:
    """Mean/std per feature and of age over the training records' in-window values."""
    acc = NormAccumulator(spec)
    for rec in train_records:
        acc.add(rec)
    return acc.result()


def patterns_seen(records: Iterable[PatientRecord]) -> tuple[tuple[bool, bool, bool], ...]:
    """Availability patterns present in ``records``, in ``AVAILABILITY_PATTERNS`` order."""
    seen = {rec.present for rec in records}
    return tuple(p for p in AVAILABILITY_PATTERNS if p in seen)


def label_rates(batch_labels: torch.Tensor, label_mask: torch.Tensor) -> list[float]:
    """Positive rate per task among known labels, clamped into (0, 1) for priors."""
    known = label_mask.float().sum(0).clamp_min(1.0)
    rates = (batch_labels * label_mask.float()).sum(0) / known
    return [float(min(max(r, 1e-3), 1 - 1e-3)) for r in rates.tolist()]


@dataclass(slots=True)
class FeaturizedSplit:
    """All tensors of one split (rows = admissions), plus their encounter keys."""

    tensors: dict[str, torch.Tensor]
    keys: list[str]

    @classmethod
    def build(
        cls,
        records: Iterable[PatientRecord],
        featurizer: RecordFeaturizer,
        *,
        text_dim: int,
        image_dim: int,
    ) -> FeaturizedSplit:
        """Featurise ``records`` in chunks; absent text/image rows hold zero vectors."""
        builder = SplitBuilder(featurizer, text_dim=text_dim, image_dim=image_dim)
        for rec in records:
            builder.add(rec)
        return builder.finish()

    def __len__(self) -> int:
        return len(self.keys)

    def batch(self, rows: Sequence[int] | torch.Tensor) -> ModalityBatch:
        """The ``ModalityBatch`` of ``rows``."""
        idx = torch.as_tensor(rows, dtype=torch.long)
        picked: dict[str, Any] = {k: v.index_select(0, idx) for k, v in self.tensors.items()}
        return ModalityBatch(keys=[self.keys[i] for i in idx.tolist()], **picked)

    @property
    def present(self) -> torch.Tensor:
        return self.tensors["present"]  # (N, 3)

    @property
    def labels(self) -> torch.Tensor:
        return self.tensors["labels"]  # (N, 3)

    @property
    def label_mask(self) -> torch.Tensor:
        return self.tensors["label_mask"]  # (N, 3)


class SplitBuilder:
    """Collects records one by one and featurises them in chunks of 512."""

    def __init__(self, featurizer: RecordFeaturizer, *, text_dim: int, image_dim: int) -> None:
        self.featurizer = featurizer
        self.text_dim = text_dim
        self.image_dim = image_dim
        self.parts: dict[str, list[torch.Tensor]] = {}
        self.keys: list[str] = []
        self.chunk: list[PatientRecord] = []

    def add(self, rec: PatientRecord) -> None:
        self.chunk.append(rec)
        if len(self.chunk) >= _CHUNK:
            self._flush()

    def _flush(self) -> None:
        if not self.chunk:
            return
        batch = self.featurizer(self.chunk)
        b = batch.size
        if batch.text_emb is None:
            batch.text_emb = torch.zeros(b, self.text_dim)  # (B, D_text)
        if batch.image_emb is None:
            batch.image_emb = torch.zeros(b, self.image_dim)  # (B, D_img)
        for f in fields(batch):
            v = getattr(batch, f.name)
            if isinstance(v, torch.Tensor):
                self.parts.setdefault(f.name, []).append(v)
        self.keys.extend(batch.keys)
        self.chunk.clear()

    def finish(self) -> FeaturizedSplit:
        self._flush()
        tensors = {name: torch.cat(ts, dim=0) for name, ts in self.parts.items()}
        return FeaturizedSplit(tensors, self.keys)


@dataclass(slots=True)
class RecordSplit:
    """The records of one split, featurised batch by batch (end-to-end fine-tuning)."""

    records: list[PatientRecord]
    featurizer: RecordFeaturizer

    def __len__(self) -> int:
        return len(self.records)

    def batch(self, rows: Sequence[int] | torch.Tensor) -> ModalityBatch:
        idx = torch.as_tensor(rows, dtype=torch.long).tolist()
        return self.featurizer([self.records[i] for i in idx])

    @property
    def present(self) -> torch.Tensor:
        return torch.tensor([r.present for r in self.records], dtype=torch.bool)

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor(
            [[float(bool(v)) for v in r.labels.as_list()] for r in self.records]
        ).reshape(-1, len(TASKS))

    @property
    def label_mask(self) -> torch.Tensor:
        return torch.tensor(
            [[v is not None for v in r.labels.as_list()] for r in self.records]
        ).reshape(-1, len(TASKS))
