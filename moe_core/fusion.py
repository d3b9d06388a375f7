"""MoE fusion parts (paper section 3.2): missing embeddings, experts, gate, top-k routing."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from moe_core.config import Combination

__all__ = [
    "ExpertPool",
    "GatingNetwork",
    "MissingEmbeddings",
    "combination_masks",
    "route_top_k",
]


class MissingEmbeddings(nn.Module):
    """Eq. 9: one learnable d_h vector per modality replaces an absent encoder output.

    With ``learned=False`` (the zero-padding ablation) the module owns no parameters and
    absent rows stay zero.
    """

    def __init__(self, n_modalities: int, d_h: int, learned: bool = True) -> None:
        super().__init__()
        self.learned = learned
        self.embeddings: nn.Parameter | None = (
            nn.Parameter(torch.randn(n_modalities, d_h) * 0.02) if learned else None
        )

    def forward(self, emb: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """(B, M, d_h) encoder outputs + (B, M) availability -> (B, M, d_h) ``v``."""
        keep = present.unsqueeze(-1)  # (B, M, 1)
        if self.embeddings is None:
            return torch.where(keep, emb, torch.zeros_like(emb))
        fill = self.embeddings.to(emb.dtype).unsqueeze(0).expand_as(emb)  # (B, M, d_h)
        return torch.where(keep, emb, fill)


class ExpertPool(nn.Module):
    """E lightweight MLPs, each ``R (M*d_h) -> hidden -> d_h``, evaluated together."""

    def __init__(self, n_experts: int, d_in: int, hidden: int, d_out: int, dropout: float):
        super().__init__()
        self.experts = nn.ModuleList(
            nn.Sequential(
                nn.Linear(d_in, hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, d_out),
                nn.ReLU(),
            )
            for _ in range(n_experts)
        )

    def __len__(self) -> int:
        return len(self.experts)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """(B, M*d_h) -> (B, E, d_out): every expert's output for every row."""
        return torch.stack([e(r) for e in self.experts], dim=1)

    def one(self, r: torch.Tensor, idx: int) -> torch.Tensor:
        """(B, M*d_h) -> (B, d_out) from expert ``idx`` only."""
        out: torch.Tensor = self.experts[idx](r)
        return out


class GatingNetwork(nn.Module):
    """Eq. 11: ``Softmax(W_g ReLU(W_R R + b_R) + b_g)`` over the experts."""

    def __init__(self, d_in: int, hidden: int, n_experts: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(d_in, hidden)
        self.out = nn.Linear(hidden, n_experts)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """(B, M*d_h) -> (B, E) probabilities (computed in float32)."""
        logits = self.out(F.relu(self.hidden(r)))  # (B, E)
        return torch.softmax(logits.float(), dim=-1)


def route_top_k(
    gate_probs: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 12: top-k experts, weights renormalised to sum to 1, the rest exactly 0.

    Returns ``(topk_idx (B, k), topk_weights (B, k), dense_weights (B, E))``.
    """
    top_p, top_idx = gate_probs.topk(k, dim=-1)  # (B, k)
    weights = top_p / top_p.sum(dim=-1, keepdim=True).clamp_min(1e-12)  # (B, k)
    dense = torch.zeros_like(gate_probs).scatter(-1, top_idx, weights)  # (B, E)
    return top_idx, weights, dense


def combination_masks(present: torch.Tensor, combinations: tuple[Combination, ...]) -> torch.Tensor:
    """(B, M) availability -> (B, N) bool: row i exhibits combination c_n exactly."""
    combos = torch.tensor(combinations, dtype=torch.bool, device=present.device)  # (N, M)
    return (present.unsqueeze(1) == combos.unsqueeze(0)).all(dim=-1)  # (B, N)
