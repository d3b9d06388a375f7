"""Image encoder (paper eq. 8): DenseNet-121 features + global average pooling -> d_h.

Weights come from torchvision's architecture with ``weights=None`` (never downloaded)
and, optionally, a local state dict such as a CheXpert-trained DenseNet-121. Such files
usually carry a wrapper prefix (``module.``, ``densenet121.``, ``model.``) and a
classifier head; both are tolerated. Anything else that does not fit is an error that
names the offending keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

__all__ = [
    "DENSENET_FEATURES",
    "ImageEncoder",
    "ImageEncoderConfig",
    "load_densenet_state_dict",
]

DENSENET_FEATURES = 1024  # width of DenseNet-121's last feature map
_WRAPPER_PREFIXES = ("module.", "densenet121.", "model.", "backbone.", "encoder.", "net.")
_HEAD_PREFIXES = ("classifier.", "fc.", "head.")
# Old torchvision checkpoints spell "norm.1" where the module is "norm1".
_LEGACY_DOTTED = re.compile(r"(norm|relu|conv)\.([12])\.")


@dataclass(slots=True)
class ImageEncoderConfig:
    """Where optional pretrained weights live and whether the backbone trains."""

    state_dict_path: str | None = None  # local .pth/.pt/.safetensors; None = random init
    freeze: bool = True  # frozen backbones make cached embeddings exact

    def __post_init__(self) -> None:
        if self.state_dict_path is not None and not str(self.state_dict_path).strip():
            raise ValueError("ImageEncoderConfig: state_dict_path is an empty string")


def _strip_key(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                changed = True
    key = _LEGACY_DOTTED.sub(r"\1\2.", key)
    return key[len("features.") :] if key.startswith("features.") else key


def load_densenet_state_dict(
    features: nn.Module, state: Mapping[str, torch.Tensor], source: str = "state dict"
) -> None:
    """Load a DenseNet-121 state dict into ``features`` (the ``.features`` block).

    Wrapper prefixes and the classifier head are dropped; missing or unexpected keys
    and shape mismatches raise ``ValueError`` naming up to five of them.
    """
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = _strip_key(key)
        if k.startswith(_HEAD_PREFIXES) or k.endswith("num_batches_tracked"):
            continue
        cleaned[k] = value
    own = features.state_dict()
    own_keys = {k for k in own if not k.endswith("num_batches_tracked")}
    missing = sorted(own_keys - cleaned.keys())
    unexpected = sorted(cleaned.keys() - own_keys)
    wrong = sorted(k for k in own_keys & cleaned.keys() if own[k].shape != cleaned[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            f"{source} is not a DenseNet-121 state dict: {len(missing)} missing keys "
            f"{missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}, "
            f"{len(wrong)} shape mismatches {wrong[:5]}"
        )
    features.load_state_dict(cleaned, strict=False)


def _read_state_file(path: Path) -> Mapping[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"image encoder weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} does not hold a state dict (found {type(obj).__name__})")
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


class ImageEncoder(nn.Module):
    """DenseNet-121 ``features`` -> ReLU -> global average pool (1024) -> Linear -> d_h."""

    def __init__(self, config: ImageEncoderConfig, d_h: int) -> None:
        super().__init__()
        from torchvision.models import densenet121

        self.config = config
        self.backbone = densenet121(weights=None).features
        if config.state_dict_path:
            path = Path(config.state_dict_path)
            load_densenet_state_dict(self.backbone, _read_state_file(path), str(path))
        if config.freeze:
            self.backbone.requires_grad_(False)
        self.input_dim = DENSENET_FEATURES
        self.proj = nn.Linear(DENSENET_FEATURES, d_h)

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, 1024) of (B, 3, 224, 224) images: what a cache stores."""
        if self.config.freeze:
            # A frozen backbone runs in eval mode so batch norm uses its running statistics.
            self.backbone.eval()
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze):
            fmap = F.relu(self.backbone(image))  # (B, 1024, 7, 7)
            pooled: torch.Tensor = F.adaptive_avg_pool2d(fmap, 1).flatten(1)  # (B, 1024)
        return pooled

    def forward(
        self, image: torch.Tensor | None = None, cached: torch.Tensor | None = None
    ) -> torch.Tensor:
        if cached is None:
            if image is None:
                raise ValueError("ImageEncoder needs images or a cached embedding")
            cached = self.embed(image)
        if cached.shape[-1] != DENSENET_FEATURES:
            raise ValueError(
                f"cached image embedding width {cached.shape[-1]} != {DENSENET_FEATURES}"
            )
        out: torch.Tensor = self.proj(cached.to(self.proj.weight.dtype))
        return out  # (B, d_h)
