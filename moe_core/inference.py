"""``Predictor``: ``PatientRecord``s in, per-admission ``Prediction``s out.

This is what the CDS service and the batch scorer call. It featurises with the
checkpoint's ``NormStats``, runs the model in batches (bf16 autocast on CUDA), and
turns the output into plain values: a risk per task, the gate weight per expert
(named like ``"E+T+I"``), the experts used, modalities used and missing, hours of data
covered, the record's quality notes and, for a record with no usable modality, an
abstain reason instead of risks.

Embedding caches (``text_cache``/``image_cache``, any mutable mapping) are filled on
a miss with the model's own frozen encoders, so repeated requests skip the backbones.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from moe_core.base import FusionModel
from moe_core.checkpoint import load_checkpoint
from moe_core.device import autocast_for, resolve_device
from moe_core.feature_spec import FeatureSpec, NormStats
from moe_core.features import (
    RecordFeaturizer,
    hours_covered,
    image_content_key,
    image_tensor,
    note_text,
    text_content_key,
)
from moe_core.modalities import MODALITIES, Modality
from moe_core.records import PatientRecord, QualityNote

__all__ = ["ABSTAIN_NO_MODALITY", "Prediction", "Predictor"]

ABSTAIN_NO_MODALITY = (
    "no usable data: no measurements, notes or frontal chest X-ray before the prediction time"
)
DEFAULT_BATCH_SIZE = 64


@dataclass(slots=True)
class Prediction:
    """One admission's result, JSON-ready via ``to_dict``."""

    patient_id: str
    encounter_id: str
    risks: dict[str, float] | None  # task key -> probability; None when abstaining
    gate_weights: dict[str, float]  # expert name -> gate probability (empty for baselines)
    routing_weights: dict[str, float]  # expert name -> weight actually applied (top-k)
    top_experts: list[str]  # experts used, highest weight first
    modalities_used: list[str]  # "ehr" | "text" | "image"
    modalities_missing: list[str]
    hours_covered: float
    quality: list[QualityNote] = field(default_factory=list)
    abstain_reason: str | None = None
    model_kind: str = ""
    spec_version: str = ""

    @property
    def abstained(self) -> bool:
        return self.abstain_reason is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _chunks(items: Sequence[PatientRecord], size: int) -> Iterator[Sequence[PatientRecord]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Predictor:
    """Batched inference over ``PatientRecord``s with a loaded model."""

    def __init__(
        self,
        model: FusionModel,
        spec: FeatureSpec,
        stats: NormStats,
        *,
        tokenizer: Any | None = None,
        device: str | torch.device | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_tokens: int = 512,
        text_cache: MutableMapping[str, torch.Tensor] | None = None,
        image_cache: MutableMapping[str, torch.Tensor] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.spec = spec
        self.stats = stats
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.text_cache = text_cache
        self.image_cache = image_cache
        self.meta = meta or {}
        self.expert_names = model.config.moe.expert_names() if model.kind == "moe" else []

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        spec: FeatureSpec | None = None,
        *,
        device: str | torch.device | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        text_cache: MutableMapping[str, torch.Tensor] | None = None,
        image_cache: MutableMapping[str, torch.Tensor] | None = None,
    ) -> Predictor:
        """Load a checkpoint; ``spec`` defaults to ``feature_catalog.DEFAULT_SPEC``."""
        if spec is None:
            from moe_core.feature_catalog import DEFAULT_SPEC

            spec = DEFAULT_SPEC
        loaded = load_checkpoint(path, spec=spec, device=resolve_device(device))
        tokenizer = None
        if loaded.model.encoders.text.backbone is not None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(
                str(loaded.model.config.text.resolved_path()), local_files_only=True
            )
        return cls(
            loaded.model,
            spec,
            loaded.stats,
            tokenizer=tokenizer,
            device=device,
            batch_size=batch_size,
            text_cache=text_cache,
            image_cache=image_cache,
            meta=loaded.meta,
        )

    # ------------------------------------------------------------------ caches

    def _fill_caches(self, records: Sequence[PatientRecord]) -> None:
        """Compute missing cache entries with the model's own (frozen) encoders."""
        encs = self.model.encoders
        if self.text_cache is not None and self.tokenizer is not None:
            todo: dict[str, str] = {}
            for rec in records:
                text = note_text(rec) if rec.present[Modality.TEXT] else ""
                key = text_content_key(text)
                if text and key not in self.text_cache:
                    todo[key] = text
            if todo:
                enc = self.tokenizer(
                    list(todo.values()),
                    padding="longest",
                    truncation=True,
                    max_length=self.max_tokens,
                    return_tensors="pt",
                ).to(self.device)
                with torch.inference_mode(), autocast_for(self.device):
                    embs = encs.text.embed(enc["input_ids"], enc["attention_mask"]).float()
                for key, emb in zip(todo, embs.cpu(), strict=True):
                    self.text_cache[key] = emb
        if self.image_cache is not None:
            keys: list[str] = []
            pixels: list[torch.Tensor] = []
            for rec in records:
                ref = rec.frontal_image()
                if ref is None:
                    continue
                try:
                    arr = ref.load()
                    key = image_content_key(ref, arr)
                    if key not in self.image_cache and key not in keys:
                        pixels.append(image_tensor(arr))
                        keys.append(key)
                except (ValueError, OSError):
                    continue  # the featuriser records it and treats the image as absent
            if pixels:
                with torch.inference_mode(), autocast_for(self.device):
                    embs = encs.image.embed(torch.stack(pixels).to(self.device)).float()
                for key, emb in zip(keys, embs.cpu(), strict=True):
                    self.image_cache[key] = emb

    # ------------------------------------------------------------------ predict

    def predict(self, records: Sequence[PatientRecord]) -> list[Prediction]:
        """One ``Prediction`` per record, in order."""
        results: list[Prediction] = []
        for chunk in _chunks(records, self.batch_size):
            results.extend(self._predict_chunk(chunk))
        return results

    def _predict_chunk(self, records: Sequence[PatientRecord]) -> list[Prediction]:
        self._fill_caches(records)
        featurizer = RecordFeaturizer(
            self.spec,
            self.stats,
            tokenizer=None if self.text_cache is not None else self.tokenizer,
            max_tokens=self.max_tokens,
            text_cache=self.text_cache,
            image_cache=self.image_cache,
        )
        featurized = featurizer.featurize(records)
        batch = featurized.batch.to(self.device)
        with torch.inference_mode(), autocast_for(self.device):
            out = self.model(batch)
        probs = out.probs.float().cpu()
        gate = out.gate_probs.float().cpu()
        weights = out.expert_weights.float().cpu()
        present = out.present.cpu()
        abstain = out.abstain.cpu()
        names = self.expert_names
        preds: list[Prediction] = []
        for i, rec in enumerate(records):
            used = [m.name.lower() for m in MODALITIES if bool(present[i, int(m)])]
            missing = [m.name.lower() for m in MODALITIES if not bool(present[i, int(m)])]
            routing = {
                names[j]: float(weights[i, j])
                for j in range(len(names))
                if names and float(weights[i, j]) > 0
            }
            preds.append(
                Prediction(
                    patient_id=rec.patient_id,
                    encounter_id=rec.encounter_id,
                    risks=None
                    if bool(abstain[i])
                    else {t: float(probs[i, j]) for j, t in enumerate(out.tasks)},
                    gate_weights={n: float(gate[i, j]) for j, n in enumerate(names)}
                    if names
                    else {},
                    routing_weights=routing,
                    top_experts=sorted(routing, key=lambda n: -routing[n]),
                    modalities_used=used,
                    modalities_missing=missing,
                    hours_covered=hours_covered(rec),
                    quality=[*rec.quality, *featurized.notes[i]],
                    abstain_reason=ABSTAIN_NO_MODALITY if bool(abstain[i]) else None,
                    model_kind=self.model.kind,
                    spec_version=self.spec.version,
                )
            )
        return preds
