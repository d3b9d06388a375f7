"""A printable model summary and a generated batch to run a forward pass on.

Used by ``moe-health model-summary`` and the benchmark; the batch is random but has
the real shapes, cycling through every availability pattern plus an all-missing row.
"""

from __future__ import annotations

import torch
from torch import nn

from moe_core.base import FusionModel
from moe_core.batch import ModalityBatch
from moe_core.features import IMAGE_SIZE, WINDOW_HOURS
from moe_core.modalities import AVAILABILITY_PATTERNS, TASKS

__all__ = ["generated_batch", "model_summary"]

_PATTERNS = [*AVAILABILITY_PATTERNS, (False, False, False)]
_TOKEN_LOW, _TOKEN_HIGH = 1000, 2000  # ordinary word pieces in BERT vocabularies
_CLS = 101


def generated_batch(
    model: FusionModel,
    n: int,
    *,
    raw: bool = False,
    seed: int = 0,
    seq_len: int = 128,
    include_empty: bool = True,
) -> ModalityBatch:
    """A random batch of ``n`` rows for ``model``'s shapes.

    Rows cycle through the 7 availability patterns (and an all-missing row when
    ``include_empty``). ``raw=False`` carries cached embeddings; ``raw=True`` token ids
    and 224x224 images for the full encoders.
    """
    patterns = _PATTERNS if include_empty else list(AVAILABILITY_PATTERNS)
    rows = [patterns[i % len(patterns)] for i in range(n)]
    g = torch.Generator().manual_seed(seed)
    ehr = model.config.ehr
    present = torch.tensor(rows, dtype=torch.bool)  # (B, 3)
    on = present.float()
    mask = (torch.rand(n, WINDOW_HOURS, ehr.n_features, generator=g) < 0.2).float()
    mask = mask * on[:, 0].view(n, 1, 1)  # (B, T, F)
    cats = torch.stack(
        [torch.randint(0, c, (n,), generator=g) for c in ehr.cat_cardinalities], dim=1
    )
    extra: dict[str, torch.Tensor] = {}
    if raw:
        ids = torch.randint(_TOKEN_LOW, _TOKEN_HIGH, (n, seq_len), generator=g)
        ids[:, 0] = _CLS
        extra["text_ids"] = ids
        extra["text_mask"] = torch.ones(n, seq_len, dtype=torch.long)
        extra["image"] = torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g) * on[:, 2].view(
            n, 1, 1, 1
        )
    else:
        extra["text_emb"] = torch.randn(n, model.encoders.text.input_dim, generator=g) * on[:, 1:2]
        extra["image_emb"] = torch.rand(n, model.encoders.image.input_dim, generator=g) * on[:, 2:3]
    return ModalityBatch(
        ehr_static_num=torch.randn(n, ehr.n_static_num, generator=g),
        ehr_static_num_mask=torch.ones(n, ehr.n_static_num),
        ehr_static_cat=cats,
        ehr_values=torch.randn(n, WINDOW_HOURS, ehr.n_features, generator=g) * mask,
        ehr_mask=mask,
        present=present,
        labels=torch.randint(0, 2, (n, len(TASKS)), generator=g).float(),
        label_mask=torch.ones(n, len(TASKS), dtype=torch.bool),
        keys=[f"generated-{i}" for i in range(n)],
        **extra,
    )


def _count(module: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return trainable, frozen


def model_summary(model: FusionModel) -> str:
    """Parameter counts per component and the routing setup, as plain text."""
    lines = [
        f"model kind: {model.kind}   tasks: {', '.join(model.tasks)}   d_h: {model.config.d_h}"
    ]
    lines.append(f"{'component':<28}{'trainable':>14}{'frozen':>14}")
    parts: list[tuple[str, nn.Module]] = [
        (f"encoders.{name}", child) for name, child in model.encoders.named_children()
    ]
    parts += [(name, child) for name, child in model.named_children() if name != "encoders"]
    for name, child in parts:
        t, f = _count(child)
        lines.append(f"{name:<28}{t:>14,}{f:>14,}")
    t, f = _count(model)
    lines.append(f"{'total':<28}{t:>14,}{f:>14,}")
    if model.kind == "moe":
        moe = model.config.moe
        lines.append(
            f"experts ({moe.experts}): {', '.join(moe.expert_names())}; gating: {moe.gating}; "
            f"top-k: {moe.top_k}; missing: {moe.missing}; alpha: {moe.alpha}"
        )
    return "\n".join(lines)
