"""``ModelOutput``: what every model in this package returns (a typed dataclass)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["ModelOutput"]


@dataclass(slots=True)
class ModelOutput:
    """One forward pass. E = experts, k = routed experts per sample, N = tasks.

    ``abstain`` rows had no modality at all: their logits are the model's prior
    (``prior_logit``, the training base rate when set), their gate fields are zero and
    their ``topk_idx`` is -1;
    they carry no information about the patient and are excluded from losses.
    Baselines without gating return (B, 0) gate tensors and a zero balance loss.
    """

    logits: torch.Tensor  # (B, N)
    probs: torch.Tensor  # (B, N) float32, sigmoid(logits)
    gate_probs: torch.Tensor  # (B, E) softmax of the gate (zeros for abstained rows)
    topk_idx: torch.Tensor  # (B, k) long, experts used per sample (-1 for abstained rows)
    topk_weights: torch.Tensor  # (B, k) renormalised weights of those experts
    expert_weights: torch.Tensor  # (B, E) dense routing weights; unselected experts = 0
    balance_loss: torch.Tensor  # () alpha * CV(f ⊙ p), eq. 16
    present: torch.Tensor  # (B, 3) bool, the availability the model saw
    abstain: torch.Tensor  # (B,) bool, True = no modality present
    tasks: tuple[str, ...] = ()  # Task keys, in logit column order
    expert_names: list[str] = field(default_factory=list)  # E names, e.g. "E+T+I"
