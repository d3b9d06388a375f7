"""What every model here shares: encoders, task heads' prior, the output assembly."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from moe_core.config import ModelConfig
from moe_core.encoders.stack import ModalityEncoders
from moe_core.output import ModelOutput

__all__ = ["FusionModel"]


class FusionModel(nn.Module):
    """Base of MoE-Health and the baselines: ``forward(batch) -> ModelOutput``.

    Subclasses set ``kind`` (the registry name saved in checkpoints). ``prior_logit``
    holds, per task, the log-odds returned for samples with no modality at all
    (abstention); ``set_prior`` fills it from training base rates.
    """

    kind: str = ""
    prior_logit: torch.Tensor

    def __init__(self, config: ModelConfig, text_backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.encoders = ModalityEncoders(
            config.d_h, config.ehr, config.text, config.image, text_backbone=text_backbone
        )
        self.register_buffer("prior_logit", torch.zeros(len(config.tasks)))

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.config.tasks

    @property
    def n_tasks(self) -> int:
        return len(self.config.tasks)

    def set_prior(self, rates: Sequence[float]) -> None:
        """Abstention output = these positive rates (one per task, in (0, 1))."""
        if len(rates) != self.n_tasks or not all(0.0 < r < 1.0 for r in rates):
            raise ValueError(f"need {self.n_tasks} rates in (0, 1), got {list(rates)}")
        r = torch.tensor(list(rates), dtype=torch.float32)
        self.prior_logit.copy_(torch.log(r) - torch.log1p(-r))

    def _finish(
        self,
        logits: torch.Tensor,  # (B, N)
        present: torch.Tensor,  # (B, M)
        gate_probs: torch.Tensor | None = None,  # (B, E)
        topk_idx: torch.Tensor | None = None,  # (B, k)
        topk_weights: torch.Tensor | None = None,  # (B, k)
        expert_weights: torch.Tensor | None = None,  # (B, E)
        balance_loss: torch.Tensor | None = None,
        expert_names: list[str] | None = None,
    ) -> ModelOutput:
        """Replace abstained rows by the prior and package the output."""
        b = logits.shape[0]
        abstain = ~present.any(dim=1)  # (B,)
        logits = logits.float()  # under bf16 autocast the prior must stay exact
        prior = self.prior_logit.float().unsqueeze(0).expand_as(logits)
        logits = torch.where(abstain.unsqueeze(1), prior, logits)
        empty_f = logits.new_zeros(b, 0, dtype=torch.float32)
        live = (~abstain).unsqueeze(1)

        def zero_abstained(t: torch.Tensor | None, fill: float = 0.0) -> torch.Tensor:
            if t is None:
                return empty_f
            return torch.where(live, t, torch.full_like(t, fill))

        return ModelOutput(
            logits=logits,
            probs=torch.sigmoid(logits.float()),
            gate_probs=zero_abstained(gate_probs),
            topk_idx=(
                torch.where(live, topk_idx, torch.full_like(topk_idx, -1))
                if topk_idx is not None
                else empty_f.long()
            ),
            topk_weights=zero_abstained(topk_weights),
            expert_weights=zero_abstained(expert_weights),
            balance_loss=(
                balance_loss
                if balance_loss is not None
                else logits.new_zeros((), dtype=torch.float32)
            ),
            present=present,
            abstain=abstain,
            tasks=self.tasks,
            expert_names=expert_names or [],
        )
