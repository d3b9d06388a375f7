"""EHR encoder (paper eq. 6): static embedding + BiLSTM over hourly values and masks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["SEQUENCE_INPUTS", "EHREncoder", "EHREncoderConfig", "carry_forward"]

# channels per feature the LSTM reads, by ``EHREncoderConfig.sequence_input``
SEQUENCE_INPUTS = {"values": 2, "carried": 4}


@dataclass(slots=True)
class EHREncoderConfig:
    """Sizes of the EHR encoder; ``n_features``/``cat_cardinalities`` come from the spec."""

    n_features: int
    cat_cardinalities: tuple[int, ...]  # vocabulary size per categorical column
    n_static_num: int = 1  # age
    cat_dim: int = 8  # categorical vocabularies are tiny (<= ~10 values)
    lstm_hidden: int = 128  # per direction
    lstm_layers: int = 1
    dropout: float = 0.1
    # What the BiLSTM sees each hour: "values" = (value, observed-mask); "carried" adds
    # the last observed value carried forward and the hours since it was observed (the
    # mask still says which hours were measured, so nothing is silently imputed).
    sequence_input: str = "carried"

    def __post_init__(self) -> None:
        self.cat_cardinalities = tuple(int(c) for c in self.cat_cardinalities)
        bad = {
            name: value
            for name, value in (
                ("n_features", self.n_features),
                ("n_static_num", self.n_static_num + 1),
                ("cat_dim", self.cat_dim),
                ("lstm_hidden", self.lstm_hidden),
                ("lstm_layers", self.lstm_layers),
            )
            if value <= 0
        }
        if bad:
            raise ValueError(f"EHREncoderConfig: values must be positive, got {bad}")
        if any(c < 1 for c in self.cat_cardinalities):
            raise ValueError(
                f"EHREncoderConfig: cardinalities must be >= 1, got {self.cat_cardinalities}"
            )
        if self.sequence_input not in SEQUENCE_INPUTS:
            raise ValueError(
                f"EHREncoderConfig: sequence_input must be one of {sorted(SEQUENCE_INPUTS)}, "
                f"got {self.sequence_input!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"EHREncoderConfig: dropout must be in [0, 1), got {self.dropout}")


def carry_forward(
    values: torch.Tensor,  # (B, T, F), 0 where unobserved
    mask: torch.Tensor,  # (B, T, F), 1 = observed
) -> tuple[torch.Tensor, torch.Tensor]:
    """(last observed value carried forward, hours since that observation / T).

    Before a feature's first observation the carried value is 0 (the normalised
    training mean) and the elapsed time is 1 (as old as the window). Vectorised: the
    index of the last observed hour is a running maximum over time.
    """
    t = values.shape[1]
    hours = torch.arange(t, device=values.device).view(1, t, 1).expand_as(values)
    observed = mask > 0
    last = torch.where(observed, hours, torch.full_like(hours, -1)).cummax(dim=1).values
    seen = last >= 0
    carried = values.gather(1, last.clamp(min=0)) * seen
    elapsed = torch.where(seen, (hours - last).to(values.dtype) / t, torch.ones_like(values))
    return carried, elapsed


class EHREncoder(nn.Module):
    """``Linear(Concat(StaticEmb, BiLSTM(hourly inputs)))`` -> d_h.

    The LSTM sees the observed-mask beside the values, so a 0 that was measured differs
    from a 0 that was not; with ``sequence_input="carried"`` (default) it also sees each
    feature's last observed value and how many hours old it is, as the MIMIC-III
    benchmark and GRU-D inputs do, which sparse, irregular lab series need. Its summary
    is the final hidden state of both directions.
    """

    def __init__(self, config: EHREncoderConfig, d_h: int) -> None:
        super().__init__()
        self.config = config
        self.cat_embs = nn.ModuleList(
            nn.Embedding(c, config.cat_dim) for c in config.cat_cardinalities
        )
        self.lstm = nn.LSTM(
            input_size=SEQUENCE_INPUTS[config.sequence_input] * config.n_features,
            hidden_size=config.lstm_hidden,
            num_layers=config.lstm_layers,
            batch_first=True,
            bidirectional=True,
            dropout=config.dropout if config.lstm_layers > 1 else 0.0,
        )
        static_dim = 2 * config.n_static_num + config.cat_dim * len(config.cat_cardinalities)
        self.dropout = nn.Dropout(config.dropout)
        self.proj = nn.Linear(static_dim + 2 * config.lstm_hidden, d_h)

    def forward(
        self,
        static_num: torch.Tensor,  # (B, S)
        static_num_mask: torch.Tensor,  # (B, S)
        static_cat: torch.Tensor,  # (B, C)
        values: torch.Tensor,  # (B, T, F)
        mask: torch.Tensor,  # (B, T, F)
    ) -> torch.Tensor:
        if values.shape[-1] != self.config.n_features:
            raise ValueError(
                f"EHR batch has {values.shape[-1]} features, encoder expects "
                f"{self.config.n_features} (feature spec mismatch?)"
            )
        if static_cat.shape[-1] != len(self.cat_embs):
            raise ValueError(
                f"EHR batch has {static_cat.shape[-1]} categorical columns, encoder expects "
                f"{len(self.cat_embs)}"
            )
        cats = [emb(static_cat[:, j]) for j, emb in enumerate(self.cat_embs)]  # C x (B, cat_dim)
        static = torch.cat([static_num, static_num_mask, *cats], dim=-1)  # (B, static_dim)
        parts = [values, mask]
        if self.config.sequence_input == "carried":
            parts.extend(carry_forward(values, mask))
        seq = torch.cat(parts, dim=-1)  # (B, T, channels * F)
        _, (h_n, _) = self.lstm(seq)  # h_n: (layers * 2, B, H)
        summary = torch.cat([h_n[-2], h_n[-1]], dim=-1)  # (B, 2H) last layer, both directions
        out: torch.Tensor = self.proj(self.dropout(torch.cat([static, summary], dim=-1)))
        return out  # (B, d_h)
