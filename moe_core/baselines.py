"""Baselines in the same contract as MoE-Health (``forward(batch) -> ModelOutput``).

* ``MedFuse`` (Hayat et al. 2022, section 3.2): an LSTM reads the sequence of the
  *available* modality embeddings (EHR first, then image, then notes) and a linear
  classifier reads its last hidden state; a missing modality is skipped, not padded.
* ``EarlyFusion``: input-level features (hourly EHR summaries, one-hot statics, the
  frozen text/image backbones' pooled outputs) concatenated with the availability
  mask into one MLP; no modality encoder is trained.
* ``JointFusion``: the trained modality encoders' d_h outputs (zeros when absent) and
  the availability mask concatenated into one MLP, all trained end to end.
* ``LateFusion``: one head per modality; the prediction is the mean probability over
  the modalities available for that sample.
* ``Unimodal``: one encoder and a head; samples without that modality abstain.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from moe_core.base import FusionModel
from moe_core.batch import ModalityBatch
from moe_core.config import ModelConfig
from moe_core.modalities import MODALITIES, Modality
from moe_core.model import MoEHealth
from moe_core.output import ModelOutput

__all__ = [
    "MEDFUSE_ORDER",
    "MODEL_KINDS",
    "EarlyFusion",
    "JointFusion",
    "LateFusion",
    "MedFuse",
    "Unimodal",
    "build_model",
]

# MedFuse reads v_ehr first, then the projected image; notes come last.
MEDFUSE_ORDER: tuple[Modality, ...] = (Modality.EHR, Modality.IMAGE, Modality.TEXT)


def _mlp(d_in: int, hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, d_out)
    )


class MedFuse(FusionModel):
    """LSTM over the variable-length sequence of available modality embeddings."""

    kind = "medfuse"

    def __init__(self, config: ModelConfig, text_backbone: nn.Module | None = None) -> None:
        super().__init__(config, text_backbone=text_backbone)
        self.lstm = nn.LSTM(config.d_h, config.fusion_hidden, batch_first=True)
        self.classifier = nn.Linear(config.fusion_hidden, self.n_tasks)

    def forward(self, batch: ModalityBatch) -> ModelOutput:
        emb = self.encoders(batch)  # (B, M, d_h)
        order = torch.tensor([int(m) for m in MEDFUSE_ORDER], device=emb.device)
        emb = emb.index_select(1, order)  # (B, M, d_h) in MedFuse order
        avail = batch.present.index_select(1, order)  # (B, M)
        # Stable sort puts the available modalities first, keeping their order.
        perm = torch.argsort((~avail).to(torch.int8), dim=1, stable=True)  # (B, M)
        seq = emb.gather(1, perm.unsqueeze(-1).expand_as(emb))  # (B, M, d_h)
        lengths = avail.sum(dim=1).clamp_min(1)  # abstained rows read one zero vector
        packed = pack_padded_sequence(
            seq.float(), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, (h_n, _) = self.lstm(packed)  # h_n: (1, B, H), state after the last real step
        logits = self.classifier(h_n[-1])  # (B, N)
        return self._finish(logits, batch.present)


class EarlyFusion(FusionModel):
    """One MLP over concatenated input-level features of every modality."""

    kind = "early"

    def __init__(self, config: ModelConfig, text_backbone: nn.Module | None = None) -> None:
        super().__init__(config, text_backbone=text_backbone)
        ehr = config.ehr
        self.ehr_dim = 2 * ehr.n_features + 2 * ehr.n_static_num + sum(ehr.cat_cardinalities)
        d_in = self.ehr_dim + self.encoders.text.input_dim + self.encoders.image.input_dim
        self.mlp = _mlp(d_in + len(MODALITIES), config.fusion_hidden, self.n_tasks, config.dropout)

    def ehr_features(self, batch: ModalityBatch) -> torch.Tensor:
        """(B, 2F + 2S + sum(cards)): mean observed value and observed fraction per
        feature over the window, the statics, one-hot categoricals."""
        seen = batch.ehr_mask.sum(dim=1)  # (B, F)
        mean = batch.ehr_values.sum(dim=1) / seen.clamp_min(1.0)  # (B, F)
        frac = seen / batch.ehr_mask.shape[1]  # (B, F)
        onehots = [
            F.one_hot(batch.ehr_static_cat[:, j].clamp(0, c - 1), c).float()
            for j, c in enumerate(self.config.ehr.cat_cardinalities)
        ]
        return torch.cat(
            [mean, frac, batch.ehr_static_num, batch.ehr_static_num_mask, *onehots], dim=-1
        )

    def _pooled(self, m: Modality, batch: ModalityBatch) -> torch.Tensor:
        """Frozen backbone output (B, D) of one modality; zeros on absent rows."""
        b = batch.size
        enc = self.encoders.text if m is Modality.TEXT else self.encoders.image
        cached = batch.text_emb if m is Modality.TEXT else batch.image_emb
        rows = batch.present[:, int(m)].nonzero(as_tuple=True)[0]
        out = batch.ehr_values.new_zeros(b, enc.input_dim)
        if rows.numel() == 0:
            return out
        with torch.no_grad():
            if cached is not None:
                feats = cached.index_select(0, rows)
            elif m is Modality.TEXT:
                if batch.text_ids is None or batch.text_mask is None:
                    raise ValueError("text present but the batch has no text input")
                feats = self.encoders.text.embed(
                    batch.text_ids.index_select(0, rows), batch.text_mask.index_select(0, rows)
                )
            else:
                if batch.image is None:
                    raise ValueError("image present but the batch has no image input")
                feats = self.encoders.image.embed(batch.image.index_select(0, rows))
        return out.index_copy(0, rows, feats.to(out.dtype))

    def forward(self, batch: ModalityBatch) -> ModelOutput:
        ehr = self.ehr_features(batch) * batch.present[:, :1].to(batch.ehr_values.dtype)
        x = torch.cat(
            [
                ehr,
                self._pooled(Modality.TEXT, batch),
                self._pooled(Modality.IMAGE, batch),
                batch.present.to(ehr.dtype),
            ],
            dim=-1,
        )  # (B, D_early)
        return self._finish(self.mlp(x), batch.present)


class JointFusion(FusionModel):
    """One MLP over the concatenated, end-to-end trained encoder outputs."""

    kind = "joint"

    def __init__(self, config: ModelConfig, text_backbone: nn.Module | None = None) -> None:
        super().__init__(config, text_backbone=text_backbone)
        d_in = len(MODALITIES) * (config.d_h + 1)
        self.mlp = _mlp(d_in, config.fusion_hidden, self.n_tasks, config.dropout)

    def forward(self, batch: ModalityBatch) -> ModelOutput:
        emb = self.encoders(batch)  # (B, M, d_h), zeros where absent
        flags = batch.present.to(emb.dtype).unsqueeze(-1)  # (B, M, 1)
        x = torch.cat([emb, flags], dim=-1).flatten(1)  # (B, M * (d_h + 1))
        return self._finish(self.mlp(x), batch.present)


class LateFusion(FusionModel):
    """Mean of per-modality predicted probabilities over the available modalities."""

    kind = "late"

    def __init__(self, config: ModelConfig, text_backbone: nn.Module | None = None) -> None:
        super().__init__(config, text_backbone=text_backbone)
        self.heads = nn.ModuleList(nn.Linear(config.d_h, self.n_tasks) for _ in MODALITIES)

    def forward(self, batch: ModalityBatch) -> ModelOutput:
        emb = self.encoders(batch)  # (B, M, d_h)
        probs = torch.stack(
            [torch.sigmoid(h(emb[:, j]).float()) for j, h in enumerate(self.heads)], dim=1
        )  # (B, M, N)
        w = batch.present.float().unsqueeze(-1)  # (B, M, 1)
        mean = (probs * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)  # (B, N)
        logits = torch.logit(mean, eps=1e-6)
        return self._finish(logits, batch.present)


class Unimodal(FusionModel):
    """One modality's encoder and a linear head (``config.unimodal`` names it)."""

    kind = "unimodal"

    def __init__(self, config: ModelConfig, text_backbone: nn.Module | None = None) -> None:
        if config.unimodal is None:
            raise ValueError("Unimodal needs config.unimodal in {'ehr', 'text', 'image'}")
        super().__init__(config, text_backbone=text_backbone)
        self.modality = Modality[config.unimodal.upper()]
        self.head = nn.Linear(config.d_h, self.n_tasks)

    def forward(self, batch: ModalityBatch) -> ModelOutput:
        m = int(self.modality)
        only = torch.zeros_like(batch.present)
        only[:, m] = batch.present[:, m]  # the other modalities are not inputs
        seen = replace(batch, present=only)
        emb = self.encoders(seen)[:, m]  # (B, d_h)
        return self._finish(self.head(emb), only)


MODEL_KINDS: dict[str, type[FusionModel]] = {
    cls.kind: cls for cls in (MoEHealth, MedFuse, EarlyFusion, JointFusion, LateFusion, Unimodal)
}
_UNIMODAL_PREFIX = "unimodal-"


def build_model(
    kind: str, config: ModelConfig, text_backbone: nn.Module | None = None
) -> FusionModel:
    """A fresh model of ``kind``: a ``MODEL_KINDS`` name, or ``unimodal-ehr|text|image``.

    For ``unimodal-<m>`` the modality is taken from the name (and must agree with
    ``config.unimodal`` when that is set).
    """
    if kind.startswith(_UNIMODAL_PREFIX):
        modality = kind[len(_UNIMODAL_PREFIX) :]
        if config.unimodal not in (None, modality):
            raise ValueError(f"kind {kind!r} disagrees with config.unimodal={config.unimodal!r}")
        config = replace(config, unimodal=modality)
        kind = Unimodal.kind
    try:
        cls = MODEL_KINDS[kind]
    except KeyError:
        choices = [
            *sorted(MODEL_KINDS),
            *(f"{_UNIMODAL_PREFIX}{m.name.lower()}" for m in MODALITIES),
        ]
        raise ValueError(f"unknown model kind {kind!r}; choose from {choices}") from None
    return cls(config, text_backbone=text_backbone)
