"""A tiny, seeded MoE-Health model for scoring tests (small d_h, a 1-layer BERT)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from moe_core.encoders.ehr import EHREncoderConfig
from moe_core.encoders.text import load_tokenizer
from moe_core.feature_catalog import DEFAULT_SPEC
from moe_core.feature_spec import NormStats
from moe_core.features import category_cardinalities
from training.score.embedding_store import EmbeddingStore
from training.score.pipeline import ModelInfo
from training.score.scorer import ModelScorer


def tiny_model(seed: int = 0) -> torch.nn.Module:
    """The same weights for the same seed, in any process."""
    from transformers import BertConfig, BertModel

    from moe_core.config import ModelConfig
    from moe_core.model import MoEHealth

    torch.manual_seed(seed)
    backbone = BertModel(
        BertConfig(
            vocab_size=30522,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        )
    )
    cfg = ModelConfig(
        ehr=EHREncoderConfig(
            n_features=DEFAULT_SPEC.n_features,
            cat_cardinalities=category_cardinalities(DEFAULT_SPEC),
            lstm_hidden=8,
        ),
        d_h=8,
    )
    return MoEHealth(cfg, text_backbone=backbone)


@dataclass(frozen=True)
class TinyScorerFactory:
    """Picklable: each Ray actor rebuilds the identical tiny model."""

    cache_path: Path | None
    seed: int = 0

    def __call__(self) -> ModelScorer:
        return ModelScorer(
            tiny_model(self.seed),
            load_tokenizer(),
            DEFAULT_SPEC,
            NormStats.identity(DEFAULT_SPEC),
            EmbeddingStore(self.cache_path),
            ModelInfo("MoE-Health", "tiny-test", DEFAULT_SPEC.version),
            encoder_tag=f"tiny-{self.seed}",
            max_tokens=64,
        )
