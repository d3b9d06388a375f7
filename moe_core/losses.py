"""Training objective (paper eqs. 13-16): masked BCE + alpha * CV(f ⊙ p).

``load_balance_loss`` follows eq. 15-16. The count ``f_k`` (how often expert k is in a
sample's top-k) is a step function of the gate output with zero gradient almost
everywhere, so it is computed without gradient and treated as a constant weight; the
gradient reaches the gate through the mean gate probability ``p``. Minimising
``CV(f ⊙ p)`` therefore pushes probability mass away from experts that are both
frequently selected and highly weighted — the same device as Switch Transformer's
``f · p`` auxiliary loss, with the coefficient of variation of Shazeer et al. (2017).
The standard deviation is the population one (``unbiased=False``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

from moe_core.batch import ModalityBatch
from moe_core.output import ModelOutput

__all__ = ["load_balance_loss", "masked_bce", "total_loss"]

_EPS = 1e-9


def load_balance_loss(
    gate_probs: torch.Tensor,  # (B, E)
    topk_idx: torch.Tensor,  # (B, k)
    alpha: float,
    valid: torch.Tensor | None = None,  # (B,) bool, rows that count
) -> torch.Tensor:
    """``alpha * std(f ⊙ p) / mean(f ⊙ p)`` over the experts, valid rows only."""
    if valid is not None:
        gate_probs = gate_probs[valid]
        topk_idx = topk_idx[valid]
    n_experts = gate_probs.shape[-1]
    if gate_probs.shape[0] == 0 or n_experts < 2:
        return gate_probs.sum() * 0.0
    with torch.no_grad():
        f = F.one_hot(topk_idx, n_experts).sum(dim=(0, 1)).to(gate_probs.dtype)  # (E,)
    p = gate_probs.mean(dim=0)  # (E,)
    fp = f * p  # (E,)
    cv = fp.std(unbiased=False) / (fp.mean() + _EPS)
    return alpha * cv


def masked_bce(
    logits: torch.Tensor,  # (B, N)
    labels: torch.Tensor,  # (B, N)
    mask: torch.Tensor,  # (B, N) bool
) -> torch.Tensor:
    """Mean BCE over the known labels only (eq. 14); 0 when none is known."""
    w = mask.to(logits.dtype)
    per = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")
    return (per * w).sum() / w.sum().clamp_min(1.0)


def total_loss(
    out: ModelOutput, batch: ModalityBatch, task_columns: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(total loss, task loss) for a labelled batch; abstained rows are excluded."""
    if batch.labels is None or batch.label_mask is None:
        raise ValueError("total_loss needs a batch with labels and label_mask")
    cols = torch.tensor(task_columns, device=batch.labels.device)
    labels = batch.labels.index_select(1, cols)  # (B, N)
    mask = batch.label_mask.index_select(1, cols) & ~out.abstain.unsqueeze(1)  # (B, N)
    task = masked_bce(out.logits, labels, mask)
    return task + out.balance_loss.float(), task
