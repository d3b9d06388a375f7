"""Which model to train: MoE-Health, its ablations (paper Table 3) and the baselines
(paper Table 1), built from one ``ModelConfig``.

Model kinds: ``moe`` and the baselines of ``moe_core.baselines`` (``medfuse``,
``early``, ``joint``, ``late``, ``unimodal-ehr``, ``unimodal-text``, ``unimodal-image``).
Ablations of ``moe``: ``zero-padding`` (no learned missing embeddings),
``generic-experts`` (experts not tied to combinations, so no expert pre-training),
``uniform-gating`` (average all experts) and ``top-1`` (route to one expert).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import torch
from torch import nn

from moe_core.base import FusionModel
from moe_core.config import Combination, ModelConfig, MoEConfig
from moe_core.encoders.ehr import EHREncoderConfig
from moe_core.encoders.image import ImageEncoderConfig
from moe_core.encoders.text import TextEncoderConfig
from moe_core.feature_spec import FeatureSpec
from moe_core.features import category_cardinalities

__all__ = [
    "ABLATIONS",
    "BASELINE_KINDS",
    "IMAGE_INIT_SEED",
    "MODEL_KINDS",
    "ModelChoice",
    "build_model",
    "model_config",
    "seeded_densenet_state",
]

ABLATIONS = ("zero-padding", "generic-experts", "uniform-gating", "top-1")
BASELINE_KINDS = (
    "medfuse",
    "early",
    "joint",
    "late",
    "unimodal-ehr",
    "unimodal-text",
    "unimodal-image",
)
MODEL_KINDS = ("moe", *BASELINE_KINDS)
# A randomly initialised DenseNet-121 is drawn from this seed whatever the model, so
# every run over a cohort shares one image-embedding cache (and says so in its card).
IMAGE_INIT_SEED = 20250829


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """A model kind and an optional MoE ablation, validated."""

    kind: str = "moe"
    ablation: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"unknown model {self.kind!r}; choose one of {MODEL_KINDS}")
        if self.ablation is not None:
            if self.ablation not in ABLATIONS:
                raise ValueError(f"unknown ablation {self.ablation!r}; choose one of {ABLATIONS}")
            if self.kind != "moe":
                raise ValueError(f"ablations apply to --model moe only, not {self.kind!r}")

    @property
    def name(self) -> str:
        return self.kind if self.ablation is None else f"{self.kind}/{self.ablation}"


def model_config(
    spec: FeatureSpec,
    choice: ModelChoice,
    *,
    combinations: tuple[Combination, ...],
    tasks: tuple[str, ...],
    hidden: int,
    top_k: int,
    alpha: float,
    text_dim: int | None,
    text_path: str | None,
    image_weights: str | None,
    fine_tune: bool,
    dropout: float = 0.1,
) -> ModelConfig:
    """The ``ModelConfig`` for ``choice``; ``hidden`` is d_h and sets the other widths."""
    moe = MoEConfig(
        combinations=combinations,
        expert_hidden=2 * hidden,
        gate_hidden=hidden,
        top_k=top_k,
        alpha=alpha,
    )
    if choice.ablation == "zero-padding":
        moe = replace(moe, missing="zero")
    elif choice.ablation == "generic-experts":
        moe = replace(moe, experts="generic")
    elif choice.ablation == "uniform-gating":
        moe = replace(moe, gating="uniform")
    elif choice.ablation == "top-1":
        moe = replace(moe, top_k=1)
    unimodal = choice.kind.split("-", 1)[1] if choice.kind.startswith("unimodal-") else None
    return ModelConfig(
        ehr=EHREncoderConfig(
            n_features=spec.n_features,
            cat_cardinalities=category_cardinalities(spec),
            lstm_hidden=max(hidden // 2, 4),
            dropout=dropout,
        ),
        d_h=hidden,
        text=TextEncoderConfig(
            path=text_path,
            freeze=not fine_tune,
            input_dim=text_dim,
            load_backbone=fine_tune,
        ),
        image=ImageEncoderConfig(state_dict_path=image_weights, freeze=not fine_tune),
        moe=moe,
        tasks=tasks,
        dropout=dropout,
        fusion_hidden=hidden,
        unimodal=unimodal,
    )


@functools.lru_cache(maxsize=1)
def _seeded_state() -> dict[str, torch.Tensor]:
    from torchvision.models import densenet121

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(IMAGE_INIT_SEED)
        state: dict[str, torch.Tensor] = densenet121(weights=None).features.state_dict()
        return state


def seeded_densenet_state() -> dict[str, torch.Tensor]:
    """DenseNet-121 ``features`` weights drawn from ``IMAGE_INIT_SEED`` (computed once)."""
    return _seeded_state()


def _reset_random_densenet(model: nn.Module, config: ModelConfig) -> None:
    """Give a randomly initialised image backbone the same weights in every run."""
    if config.image.state_dict_path:
        return
    encoders = getattr(model, "encoders", None)
    image = getattr(encoders, "image", None)
    backbone = getattr(image, "backbone", None)
    if backbone is None:
        return
    backbone.load_state_dict(seeded_densenet_state())


def build_model(choice: ModelChoice, config: ModelConfig) -> FusionModel:
    """Instantiate ``choice`` from ``config``."""
    from moe_core.baselines import build_model as build_kind

    model = build_kind(choice.kind, config)
    _reset_random_densenet(model, config)
    return model
