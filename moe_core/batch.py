"""``ModalityBatch``: the tensors a model consumes (see DESIGN.md, 'ModalityBatch').

B = batch, T = hourly bins, F = time-series features, L = tokens, D = embedding width.
Masks travel with data: 1/True means observed. Nothing is imputed silently; absent
values are 0 with mask 0, and absent modalities are flagged in ``present``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

from moe_core.modalities import MODALITIES, TASKS

__all__ = ["ModalityBatch"]


@dataclass(slots=True)
class ModalityBatch:
    """A batch of admissions with explicit missingness.

    Text and image each arrive either raw (``text_ids``/``text_mask``, ``image``) or as
    cached encoder outputs (``text_emb``, ``image_emb``) when encoders are frozen.
    Rows whose modality is absent hold zeros there and ``present[:, m] = False``.
    """

    ehr_static_num: torch.Tensor  # (B, S) float: normalised numeric statics (age), 0 if unknown
    ehr_static_num_mask: torch.Tensor  # (B, S) float: 1 = known
    ehr_static_cat: torch.Tensor  # (B, C) long: category ids, 0 = unknown
    ehr_values: torch.Tensor  # (B, T, F) float: normalised hourly values, 0 where unobserved
    ehr_mask: torch.Tensor  # (B, T, F) float: 1 = observed in that hour
    present: torch.Tensor  # (B, 3) bool, Modality order (EHR, TEXT, IMAGE)
    text_ids: torch.Tensor | None = None  # (B, L) long
    text_mask: torch.Tensor | None = None  # (B, L) long, 1 = real token
    text_emb: torch.Tensor | None = None  # (B, D_text) float, cached encoder output
    image: torch.Tensor | None = None  # (B, 3, 224, 224) float, normalised
    image_emb: torch.Tensor | None = None  # (B, D_img) float, cached encoder output
    labels: torch.Tensor | None = None  # (B, 3) float in {0, 1}, Task order
    label_mask: torch.Tensor | None = None  # (B, 3) bool, True = label known
    keys: list[str] = field(default_factory=list)  # one opaque id per row (encounter key)

    def __post_init__(self) -> None:
        b = self.present.shape[0]
        if self.present.shape != (b, len(MODALITIES)):
            raise ValueError(
                f"present must be (B, {len(MODALITIES)}), got {tuple(self.present.shape)}"
            )
        if self.ehr_values.shape != self.ehr_mask.shape:
            raise ValueError(
                f"ehr_values {tuple(self.ehr_values.shape)} and ehr_mask "
                f"{tuple(self.ehr_mask.shape)} must have the same shape"
            )
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor) and v.shape[0] != b:
                raise ValueError(f"{f.name} has {v.shape[0]} rows, present has {b}")
        if self.labels is not None:
            if self.labels.shape != (b, len(TASKS)):
                raise ValueError(
                    f"labels must be (B, {len(TASKS)}), got {tuple(self.labels.shape)}"
                )
            if self.label_mask is None or self.label_mask.shape != self.labels.shape:
                raise ValueError("labels need a label_mask of the same shape")
        if (self.text_ids is None) != (self.text_mask is None):
            raise ValueError("text_ids and text_mask go together")

    @property
    def size(self) -> int:
        return int(self.present.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ModalityBatch:
        """A copy with every tensor on ``device``."""
        moved: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                moved[f.name] = v.to(device, non_blocking=non_blocking)
        return replace(self, **moved)

    def select(self, rows: torch.Tensor) -> ModalityBatch:
        """The sub-batch of ``rows`` (a bool mask or an index tensor)."""
        idx = rows.nonzero(as_tuple=True)[0] if rows.dtype == torch.bool else rows
        picked: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                picked[f.name] = v.index_select(0, idx.to(v.device))
        idx_list = idx.tolist()
        picked["keys"] = [self.keys[i] for i in idx_list] if self.keys else []
        return replace(self, **picked)
