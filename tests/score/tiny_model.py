"""A tiny MoE-Health checkpoint for scoring tests (small d_h; frozen local MiniLM)."""

from __future__ import annotations

from pathlib import Path

import torch

from moe_core.checkpoint import save_checkpoint
from moe_core.config import ModelConfig
from moe_core.encoders.ehr import EHREncoderConfig
from moe_core.feature_catalog import DEFAULT_SPEC
from moe_core.feature_spec import NormStats
from moe_core.features import category_cardinalities
from moe_core.model import MoEHealth


def tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """Save a seeded, untrained tiny model at ``path`` (a real checkpoint folder)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(
        ehr=EHREncoderConfig(
            n_features=DEFAULT_SPEC.n_features,
            cat_cardinalities=category_cardinalities(DEFAULT_SPEC),
            lstm_hidden=8,
        ),
        d_h=8,
    )
    model = MoEHealth(cfg)
    return save_checkpoint(
        path,
        model,
        spec_version=DEFAULT_SPEC.version,
        stats=NormStats.identity(DEFAULT_SPEC),
        metadata={"name": "MoE-Health", "version": f"tiny-{seed}"},
    )
