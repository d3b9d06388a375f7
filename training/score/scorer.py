"""The model stage: feature rows -> encoders (through the embedding cache) -> model -> risks.

Text and image encoders are frozen at inference, so their pooled outputs are cached by
content hash (``EmbeddingStore``) and the model receives ``ModalityBatch.text_emb`` /
``image_emb``: a nightly rerun encodes only the notes and images it has not seen. The
cache key names the encoder by the checkpoint's checksum, so a new model never reuses
another model's vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from moe_core.batch import ModalityBatch
from moe_core.device import autocast_for
from moe_core.feature_spec import FeatureSpec, NormStats
from moe_core.features import text_content_key
from moe_core.inference import ABSTAIN_NO_MODALITY
from moe_core.modalities import TASKS, Modality
from training.score.embedding_store import CacheProbe, EmbeddingStore
from training.score.pipeline import FeatureRow, ModelInfo, ScoredRow, modality_names, round_risk

__all__ = ["ModelScorer", "ScorerFactory", "default_checkpoint", "model_info"]
_ENCODE_BATCH = 32  # notes/images per encoder call


class ModelScorer:
    """A loaded model with its frozen encoders, the embedding cache and a device."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        spec: FeatureSpec,
        stats: NormStats,
        store: EmbeddingStore,
        info: ModelInfo,
        encoder_tag: str,
        device: torch.device | str = "cpu",
        max_tokens: int = 512,
    ) -> None:
        self.device = torch.device(device)
        self.model: Any = model.eval().to(self.device)
        self.spec = spec
        self.stats = stats
        self.encoder_tag = encoder_tag
        self.tokenizer = tokenizer
        self.store = store
        self.info = info
        self.max_tokens = max_tokens
        self.text_id = f"text:{encoder_tag}:{max_tokens}"
        self.image_id = f"image:{encoder_tag}"

    def image_cached(self, key: str) -> bool:
        """Whether the image embedding for ``key`` is in the cache."""
        return bool(self.store.get_many(self.image_id, [key]))

    def probe(self) -> CacheProbe:
        """A picklable ``image_cached`` for worker processes (reads the same cache file)."""
        return CacheProbe(self.store.path, self.image_id)

    @torch.inference_mode()
    def _encode_texts(self, texts: list[object]) -> npt.NDArray[np.float32]:
        encoder = self.model.encoders.text
        out: list[npt.NDArray[np.float32]] = []
        for start in range(0, len(texts), _ENCODE_BATCH):
            enc = self.tokenizer(
                [str(t) for t in texts[start : start + _ENCODE_BATCH]],
                padding="longest",
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="pt",
            )
            ids = enc["input_ids"].to(self.device)  # (B, L)
            mask = enc["attention_mask"].to(self.device)  # (B, L)
            with autocast_for(self.device):
                emb = encoder.embed(ids, mask)  # (B, D_text)
            out.append(emb.float().cpu().numpy())
        return np.concatenate(out)

    @torch.inference_mode()
    def _encode_images(self, images: list[object]) -> npt.NDArray[np.float32]:
        encoder = self.model.encoders.image
        out: list[npt.NDArray[np.float32]] = []
        for start in range(0, len(images), _ENCODE_BATCH):
            chunk = [np.asarray(i, dtype=np.float32) for i in images[start : start + _ENCODE_BATCH]]
            x = torch.from_numpy(np.stack(chunk)).to(self.device)  # (B, 3, 224, 224)
            with autocast_for(self.device):
                emb = encoder.embed(x)  # (B, D_img)
            out.append(emb.float().cpu().numpy())
        return np.concatenate(out)

    def _embeddings(self, rows: Sequence[FeatureRow], col: Modality) -> torch.Tensor | None:
        idx = [i for i, r in enumerate(rows) if r.present[col]]
        if not idx:
            return None
        if col == Modality.TEXT:
            keys = [text_content_key(rows[i].text) for i in idx]
            vecs = self.store.embed(
                self.text_id, keys, [rows[i].text for i in idx], self._encode_texts
            )
        else:
            keys = [rows[i].image_key for i in idx]
            vecs = self.store.embed(
                self.image_id, keys, [rows[i].image for i in idx], self._encode_images
            )
        full = np.zeros((len(rows), vecs.shape[1]), dtype=np.float32)  # (B, D)
        full[idx] = vecs
        return torch.from_numpy(full)

    def batch(self, rows: Sequence[FeatureRow]) -> ModalityBatch:
        """The model batch for ``rows``, with cached (or freshly computed) embeddings."""
        return ModalityBatch(
            ehr_static_num=torch.from_numpy(np.stack([r.static_num for r in rows])),  # (B, S)
            ehr_static_num_mask=torch.from_numpy(np.stack([r.static_num_mask for r in rows])),
            ehr_static_cat=torch.from_numpy(np.stack([r.static_cat for r in rows])),  # (B, C)
            ehr_values=torch.from_numpy(np.stack([r.ehr_values for r in rows])),  # (B, T, F)
            ehr_mask=torch.from_numpy(np.stack([r.ehr_mask for r in rows])),  # (B, T, F)
            present=torch.from_numpy(np.stack([r.present for r in rows])),  # (B, 3)
            text_emb=self._embeddings(rows, Modality.TEXT),  # (B, D_text) or None
            image_emb=self._embeddings(rows, Modality.IMAGE),  # (B, D_img) or None
            keys=[r.encounter_id for r in rows],
        )

    @torch.inference_mode()
    def score(self, rows: Sequence[FeatureRow]) -> list[ScoredRow]:
        """Risks for every row, in order (abstentions carry a reason instead)."""
        if not rows:
            return []
        batch = self.batch(rows).to(self.device)
        with autocast_for(self.device):
            out = self.model(batch)
        probs = out.probs.float().cpu().numpy()  # (B, N)
        present = out.present.cpu().numpy()  # (B, 3)
        abstain = out.abstain.cpu().numpy()  # (B,)
        weights = out.gate_probs.float().cpu().numpy()  # (B, E)
        names = list(out.expert_names)
        tasks = list(out.tasks) or [t.key for t in TASKS]
        scored = []
        for i, row in enumerate(rows):
            used, missing = modality_names([bool(v) for v in present[i]])
            gates = {n: round(float(w), 6) for n, w in zip(names, weights[i], strict=True) if w > 0}
            scored.append(
                ScoredRow(
                    patient_id=row.patient_id,
                    encounter_id=row.encounter_id,
                    prediction_time=row.prediction_time,
                    risks={key: round_risk(probs[i, c]) for c, key in enumerate(tasks)},
                    modalities_used=used,
                    modalities_missing=missing,
                    abstain_reason=ABSTAIN_NO_MODALITY if bool(abstain[i]) else None,
                    gate_weights=gates or None,
                )
            )
        return scored


def default_checkpoint() -> Path:
    """The synthetic demo checkpoint shipped with the package (not for clinical use)."""
    from cds_hooks.config import default_model_path

    return default_model_path()


def model_info(meta: dict[str, Any], spec_version: str) -> ModelInfo:
    """Name and version of a checkpoint, from its ``config.json``.

    The version is the training run's ``version`` when it recorded one, else the package
    version plus the first 12 hex digits of the weights' sha256.
    """
    training = meta.get("training") or {}
    name = str(training.get("name") or "MoE-Health")
    version = training.get("version") or (
        f"{meta.get('package_version', '0')}+{str(meta.get('weights_sha256', ''))[:12]}"
    )
    return ModelInfo(name, str(version), spec_version)


@dataclass(frozen=True, slots=True)
class ScorerFactory:
    """Loads a checkpoint into a ``ModelScorer`` (picklable: each Ray actor calls it)."""

    checkpoint: Path
    cache_path: Path | None
    device: str = "auto"  # "auto" = CUDA when available, else CPU
    max_tokens: int = 512

    def __call__(self) -> ModelScorer:
        from moe_core.checkpoint import load_checkpoint
        from moe_core.device import resolve_device
        from moe_core.encoders.text import load_tokenizer
        from moe_core.feature_catalog import DEFAULT_SPEC

        device = resolve_device(None if self.device == "auto" else self.device)
        loaded = load_checkpoint(self.checkpoint, spec=DEFAULT_SPEC, device=device)
        model: Any = loaded.model
        tokenizer = None
        if getattr(model.encoders.text, "backbone", None) is not None:
            tokenizer = load_tokenizer(model.config.text.resolved_path())
        meta = loaded.meta
        text_name = str((meta.get("text_encoder") or {}).get("name", ""))
        tag = f"{str(meta.get('weights_sha256', 'unknown'))[:16]}:{text_name}"
        return ModelScorer(
            model,
            tokenizer,
            DEFAULT_SPEC,
            loaded.stats,
            EmbeddingStore(self.cache_path),
            model_info(meta, loaded.spec_version),
            encoder_tag=tag,
            device=device,
            max_tokens=self.max_tokens,
        )
