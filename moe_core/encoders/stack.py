"""All three encoders behind one call: a batch in, (B, M, d_h) embeddings out.

Only rows where a modality is present run through its encoder (rows are gathered by
index, so a mixed batch is still one forward per encoder); absent rows are zeros and
are replaced downstream (missing embeddings, zero padding, or skipped by MedFuse).
"""

from __future__ import annotations

import torch
from torch import nn

from moe_core.batch import ModalityBatch
from moe_core.encoders.ehr import EHREncoder, EHREncoderConfig
from moe_core.encoders.image import ImageEncoder, ImageEncoderConfig
from moe_core.encoders.text import TextEncoder, TextEncoderConfig
from moe_core.modalities import MODALITIES, Modality

__all__ = ["ModalityEncoders"]


class ModalityEncoders(nn.Module):
    """EHR, text and image encoders, each projecting to ``d_h``."""

    def __init__(
        self,
        d_h: int,
        ehr: EHREncoderConfig,
        text: TextEncoderConfig,
        image: ImageEncoderConfig,
        text_backbone: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.d_h = d_h
        self.ehr = EHREncoder(ehr, d_h)
        self.text = TextEncoder(text, d_h, backbone=text_backbone)
        self.image = ImageEncoder(image, d_h)

    def forward(self, batch: ModalityBatch) -> torch.Tensor:
        """Encoder outputs (B, M, d_h); rows whose modality is absent are zeros."""
        present = batch.present
        b = batch.size
        cols: list[torch.Tensor] = []
        for m in MODALITIES:
            rows = present[:, int(m)].nonzero(as_tuple=True)[0]  # (P,)
            if rows.numel() == 0:
                cols.append(batch.ehr_values.new_zeros(b, self.d_h))
                continue
            enc = self._encode(m, batch, rows)  # (P, d_h)
            full = enc.new_zeros(b, self.d_h)
            cols.append(full.index_copy(0, rows, enc))  # (B, d_h)
        dtype = cols[0].dtype
        return torch.stack([c.to(dtype) for c in cols], dim=1)  # (B, M, d_h)

    def _encode(self, m: Modality, batch: ModalityBatch, rows: torch.Tensor) -> torch.Tensor:
        if m is Modality.EHR:
            ehr: torch.Tensor = self.ehr(
                batch.ehr_static_num.index_select(0, rows),
                batch.ehr_static_num_mask.index_select(0, rows),
                batch.ehr_static_cat.index_select(0, rows),
                batch.ehr_values.index_select(0, rows),
                batch.ehr_mask.index_select(0, rows),
            )
            return ehr
        if m is Modality.TEXT:
            if batch.text_emb is not None:
                out: torch.Tensor = self.text(cached=batch.text_emb.index_select(0, rows))
                return out
            if batch.text_ids is None or batch.text_mask is None:
                raise ValueError(
                    "batch marks text as present but carries neither token ids nor "
                    "cached text embeddings (featurise with a tokenizer or a text cache)"
                )
            out = self.text(
                ids=batch.text_ids.index_select(0, rows),
                mask=batch.text_mask.index_select(0, rows),
            )
            return out
        if batch.image_emb is not None:
            out = self.image(cached=batch.image_emb.index_select(0, rows))
            return out
        if batch.image is None:
            raise ValueError(
                "batch marks an image as present but carries neither pixels nor cached "
                "image embeddings"
            )
        out = self.image(image=batch.image.index_select(0, rows))
        return out
