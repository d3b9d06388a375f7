"""MoE-Health (Wang & Yang 2025, section 3.2): encoders -> missing embeddings -> R ->
combination experts routed by a top-k gate -> multi-task heads.

Ablations (paper Table 3) are real code paths chosen in ``MoEConfig``:

* ``missing="zero"``: no missing embeddings; absent modalities are zero vectors.
* ``experts="generic"``: experts are not tied to combinations and cannot be
  pre-trained on them (``expert_pretraining_loss`` refuses).
* ``gating="uniform"``: no gating network; every expert's output is averaged.
* ``top_k=1``: route to a single expert.

A sample with no modality is not routed: the model abstains and returns its prior
(see ``ModelOutput``).
"""

from __future__ import annotations

import torch
from torch import nn

from moe_core.base import FusionModel
from moe_core.batch import ModalityBatch
from moe_core.config import ModelConfig
from moe_core.fusion import (
    ExpertPool,
    GatingNetwork,
    MissingEmbeddings,
    combination_masks,
    route_top_k,
)
from moe_core.losses import load_balance_loss, masked_bce
from moe_core.modalities import MODALITIES
from moe_core.output import ModelOutput

__all__ = ["MoEHealth", "combination_sample_masks", "expert_pretraining_loss"]


class MoEHealth(FusionModel):
    """The full model; ``forward(batch)`` returns a ``ModelOutput``."""

    kind = "moe"

    def __init__(self, config: ModelConfig, text_backbone: nn.Module | None = None) -> None:
        super().__init__(config, text_backbone=text_backbone)
        moe = config.moe
        d_r = len(MODALITIES) * config.d_h  # width of R, eq. 10
        self.missing = MissingEmbeddings(len(MODALITIES), config.d_h, moe.missing == "learned")
        self.experts = ExpertPool(moe.n_experts, d_r, moe.expert_hidden, config.d_h, config.dropout)
        self.gate: GatingNetwork | None = (
            GatingNetwork(d_r, moe.gate_hidden, moe.n_experts) if moe.gating == "learned" else None
        )
        self.dropout = nn.Dropout(config.dropout)
        self.heads = nn.Linear(config.d_h, self.n_tasks)  # one logit per task

    @property
    def expert_names(self) -> list[str]:
        return self.config.moe.expert_names()

    def representation(self, batch: ModalityBatch) -> torch.Tensor:
        """R of eq. 10: (B, M * d_h)."""
        emb = self.encoders(batch)  # (B, M, d_h)
        v: torch.Tensor = self.missing(emb, batch.present)  # (B, M, d_h), eq. 9
        return v.flatten(1)  # (B, M * d_h)

    def forward(self, batch: ModalityBatch, expert: int | None = None) -> ModelOutput:
        """Route every row through the gate, or (``expert=n``) through expert n only."""
        r = self.representation(batch)  # (B, M * d_h)
        present = batch.present
        valid = present.any(dim=1)  # (B,)
        b, n_exp = r.shape[0], len(self.experts)
        if expert is not None:
            if not 0 <= expert < n_exp:
                raise ValueError(f"expert index {expert} out of range 0..{n_exp - 1}")
            fused = self.experts.one(r, expert)  # (B, d_h)
            dense = torch.zeros(b, n_exp, device=r.device)
            dense[:, expert] = 1.0
            topk_idx = torch.full((b, 1), expert, dtype=torch.long, device=r.device)
            topk_w = torch.ones(b, 1, device=r.device)
            gate_probs, balance = dense, None
        else:
            outs = self.experts(r)  # (B, E, d_h)
            if self.gate is None:  # ablation: uniform average of all experts
                gate_probs = torch.full((b, n_exp), 1.0 / n_exp, device=r.device)
                topk_idx = torch.arange(n_exp, device=r.device).expand(b, n_exp)
                topk_w, dense, balance = gate_probs, gate_probs, None
            else:
                gate_probs = self.gate(r)  # (B, E)
                topk_idx, topk_w, dense = route_top_k(gate_probs, self.config.moe.effective_k)
                balance = load_balance_loss(
                    gate_probs, topk_idx, self.config.moe.alpha, valid=valid
                )
            fused = (dense.to(outs.dtype).unsqueeze(-1) * outs).sum(dim=1)  # (B, d_h)
        logits = self.heads(self.dropout(fused))  # (B, N)
        return self._finish(
            logits,
            present,
            gate_probs=gate_probs,
            topk_idx=topk_idx,
            topk_weights=topk_w,
            expert_weights=dense,
            balance_loss=balance,
            expert_names=self.expert_names,
        )

    def expert_parameters(self, idx: int) -> list[nn.Parameter]:
        """Parameters of expert ``idx`` (for a pre-training optimiser)."""
        return list(self.experts.experts[idx].parameters())


def combination_sample_masks(model: MoEHealth, present: torch.Tensor) -> torch.Tensor:
    """(B, N) bool: which rows pre-train which expert (row i has exactly c_n)."""
    if model.config.moe.experts != "specialised":
        raise ValueError(
            "generic experts are not tied to modality combinations; "
            "there is nothing to pre-train them on (experts='generic')"
        )
    return combination_masks(present, model.config.moe.combinations)


def expert_pretraining_loss(
    model: MoEHealth, batch: ModalityBatch, expert_idx: int
) -> torch.Tensor | None:
    """Masked BCE of expert ``expert_idx`` alone on the rows with its combination.

    Returns ``None`` when the batch has no such row (skip the step). The caller owns the
    optimiser (e.g. over ``model.expert_parameters(idx)`` plus the encoders and heads).
    """
    rows = combination_sample_masks(model, batch.present)[:, expert_idx]  # (B,)
    if not bool(rows.any()):
        return None
    sub = batch.select(rows)
    if sub.labels is None or sub.label_mask is None:
        raise ValueError("expert pre-training needs labels")
    out = model(sub, expert=expert_idx)
    cols = torch.tensor(model.config.task_columns, device=sub.labels.device)
    return masked_bce(
        out.logits, sub.labels.index_select(1, cols), sub.label_mask.index_select(1, cols)
    )
