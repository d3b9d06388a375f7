"""The final checkpoint of a training run and its sidecar metadata.

The model, its ``ModelConfig``, the feature-spec version and the training-split
``NormStats`` are saved with ``moe_core.checkpoint``; the training options, the best
epoch, validation scores and the embedding-cache identities go into the checkpoint's
metadata and into ``train_summary.json`` beside it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from moe_core.base import FusionModel
from moe_core.feature_spec import FeatureSpec, NormStats

if TYPE_CHECKING:
    from training.prepare import Caches
    from training.train import TrainConfig

__all__ = ["TRAIN_SUMMARY", "write_final"]

TRAIN_SUMMARY = "train_summary.json"


def _clean(values: dict[str, float]) -> dict[str, float | None]:
    return {k: None if math.isnan(v) else round(v, 6) for k, v in values.items()}


def write_final(
    path: Path,
    model: FusionModel,
    spec: FeatureSpec,
    stats: NormStats,
    *,
    cfg: TrainConfig,
    best_epoch: int,
    val: dict[str, float],
    caches: Caches | None,
    world_size: int = 1,
    window_hours: int | None = None,
) -> None:
    """Save the trained model into the checkpoint folder ``path`` (``moe_core.checkpoint``)
    and ``train_summary.json`` beside it.

    ``window_hours``: the cohort's observation window; the CDS service serves the model
    on the window it was trained on.
    """
    from moe_core.checkpoint import save_checkpoint

    meta: dict[str, Any] = {
        "train_config": cfg.to_dict(),
        "best_epoch": best_epoch,
        "world_size": world_size,
        "val": _clean(val),
        "text_cache": caches.text.identity if caches and caches.text else None,
        "image_cache": caches.image.identity if caches and caches.image else None,
    }
    if window_hours is not None:
        meta["window_hours"] = int(window_hours)
    save_checkpoint(path, model, spec, stats, metrics={"val": meta["val"]}, metadata=meta)
    (path.parent / TRAIN_SUMMARY).write_bytes(
        orjson.dumps({"checkpoint": path.name, **meta}, option=orjson.OPT_INDENT_2)
    )
