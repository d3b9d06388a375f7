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
from moe_core.features import EmbeddingLookup, RecordFeaturizer, window_start
from moe_core.modalities import AVAILABILITY_PATTERNS, TASKS
from moe_core.records import PatientRecord

__all__ = [
    "FeaturizedSplit",
    "RecordSplit",
    "fit_norm_stats",
    "label_rates",
    "patterns_seen",
]

_CHUNK = 512


def fit_norm_stats(spec: FeatureSpec, train_records: Iterable[PatientRecord]) -> NormStats:
    """Mean/std per feature and of age over the training records' in-window values."""
    index = spec.index()
    n = [0] * spec.n_features
    s = [0.0] * spec.n_features
    ss = [0.0] * spec.n_features
    ages: list[float] = []
    for rec in train_records:
        start, stop = window_start(rec), rec.prediction_time
        for ev in rec.events:
            col = index.get(ev.code)
            if col is None or not (start <= ev.time < stop) or not math.isfinite(ev.value):
                continue
            n[col] += 1
            s[col] += ev.value
            ss[col] += ev.value * ev.value
        if rec.static.age is not None and math.isfinite(rec.static.age):
            ages.append(float(rec.static.age))
    means, stds = [], []
    for c in range(spec.n_features):
        if n[c] == 0:
            means.append(0.0)
            stds.append(1.0)
            continue
        m = s[c] / n[c]
        var = max(ss[c] / n[c] - m * m, 0.0)
        means.append(m)
        stds.append(math.sqrt(var) if var > 1e-12 else 1.0)
    fitted = NormStats.fit(spec, {}, ages)  # age statistics (and the defaults) from there
    return NormStats(spec.version, tuple(means), tuple(stds), fitted.age_mean, fitted.age_std)


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
        spec: FeatureSpec,
        stats: NormStats,
        *,
        text_cache: EmbeddingLookup | None,
        image_cache: EmbeddingLookup | None,
        text_dim: int,
        image_dim: int,
    ) -> FeaturizedSplit:
        """Featurise ``records`` in chunks; absent text/image rows hold zero vectors."""
        featurizer = RecordFeaturizer(
            spec, stats, text_cache=text_cache, image_cache=image_cache
        )
        parts: dict[str, list[torch.Tensor]] = {}
        keys: list[str] = []
        chunk: list[PatientRecord] = []

        def flush() -> None:
            batch = featurizer(chunk)
            b = batch.size
            if batch.text_emb is None:
                batch.text_emb = torch.zeros(b, text_dim)  # (B, D_text)
            if batch.image_emb is None:
                batch.image_emb = torch.zeros(b, image_dim)  # (B, D_img)
            for f in fields(batch):
                v = getattr(batch, f.name)
                if isinstance(v, torch.Tensor):
                    parts.setdefault(f.name, []).append(v)
            keys.extend(batch.keys)
            chunk.clear()

        for rec in records:
            chunk.append(rec)
            if len(chunk) >= _CHUNK:
                flush()
        if chunk:
            flush()
        tensors = {name: torch.cat(ts, dim=0) for name, ts in parts.items()}
        return cls(tensors, keys)

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

    def _all(self) -> ModalityBatch:
        return self.featurizer(self.records)

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
