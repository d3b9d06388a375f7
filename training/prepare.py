"""Get a cohort ready for a model: norm stats, embedding caches, featurised splits.

Two streaming passes over the cohort, whatever the number of models trained on it:
``scan_cohort`` fits ``NormStats`` on the training split and lists the note texts and
images to embed; ``featurise_splits`` turns every split into tensors. With frozen
encoders (the default) text and image embeddings come from
``training.embedding_cache``: rank 0 fills the caches, the other ranks wait and read.
Shared by ``train`` and ``evaluate``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from moe_core.encoders.image import ImageEncoder, ImageEncoderConfig
from moe_core.encoders.text import TextEncoder, TextEncoderConfig, load_tokenizer
from moe_core.feature_spec import FeatureSpec, NormStats
from moe_core.features import RecordFeaturizer
from moe_core.modalities import AVAILABILITY_PATTERNS, Modality
from moe_core.records import ImageRef
from training.cohort_store import read_admissions, read_records
from training.data import FeaturizedSplit, NormAccumulator, SplitBuilder
from training.ddp import DistContext, barrier
from training.embedding_cache import (
    EmbeddingCache,
    add_image_item,
    add_text_item,
    encoder_identity,
    fill_image_cache,
    fill_text_cache,
    folder_identity,
)
from training.models import IMAGE_INIT_SEED, seeded_densenet_state
from training.splits import SPLIT_NAMES, TRAIN

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "Caches",
    "CohortScan",
    "featurise_splits",
    "image_embedder",
    "prepare_caches",
    "scan_cohort",
    "text_embedder",
]

DEFAULT_MAX_TOKENS = 512  # BERT position limit; notes are assembled newest first
TEXT_DIM_UNUSED = 384  # width of the zero text columns when a cohort has no notes
IMAGE_DIM = 1024  # DenseNet-121 pooled features


def text_embedder(path: str | None) -> TextEncoder:
    """The frozen text encoder (backbone loaded from local files) used to fill caches."""
    return TextEncoder(TextEncoderConfig(path=path, freeze=True, load_backbone=True), d_h=8)


def image_embedder(weights: str | None) -> ImageEncoder:
    """The frozen DenseNet-121 used to fill caches: local weights, else the shared seed."""
    if weights:
        return ImageEncoder(ImageEncoderConfig(state_dict_path=weights, freeze=True), d_h=8)
    enc = ImageEncoder(ImageEncoderConfig(freeze=True), d_h=8)
    enc.backbone.load_state_dict(seeded_densenet_state())
    return enc


def _text_width(folder: Path) -> int:
    from transformers import AutoConfig

    hf = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    return int(hf.hidden_size)


@dataclass(slots=True)
class CohortScan:
    """What one pass over a cohort tells: train statistics and what to embed."""

    stats: NormStats
    combinations: tuple[tuple[bool, bool, bool], ...]  # seen in the training split
    counts: dict[str, int]  # admissions per split
    text_items: dict[str, str] = field(default_factory=dict)
    image_items: dict[str, tuple[str, ImageRef]] = field(default_factory=dict)
    image_failed: list[str] = field(default_factory=list)


def _split_of(cohort: Path) -> dict[str, str]:
    table = read_admissions(cohort).select(["encounter_id", "split"])
    return dict(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))


def scan_cohort(cohort: Path, spec: FeatureSpec) -> CohortScan:
    """One streaming pass: NormStats and patterns (train only), texts/images (all)."""
    split_of = _split_of(cohort)
    acc = NormAccumulator(spec)
    seen: set[tuple[bool, bool, bool]] = set()
    counts = dict.fromkeys(SPLIT_NAMES, 0)
    texts: dict[str, str] = {}
    images: dict[str, tuple[str, ImageRef]] = {}
    failed: list[str] = []
    for rec in read_records(cohort):
        split = split_of.get(rec.encounter_id, "")
        counts[split] = counts.get(split, 0) + 1
        if split == TRAIN:
            acc.add(rec)
            seen.add(rec.present)
        add_text_item(texts, rec)
        add_image_item(images, failed, rec)
    combos = tuple(p for p in AVAILABILITY_PATTERNS if p in seen)
    return CohortScan(acc.result(), combos, counts, texts, images, failed)


@dataclass(slots=True)
class Caches:
    """Embedding lookups for the featuriser and the widths they produce."""

    text: EmbeddingCache | None
    image: EmbeddingCache | None
    text_dim: int
    image_dim: int

    def image_lookup(self) -> Callable[[str], npt.NDArray[np.float32]] | None:
        """A lookup that turns a missing (undecodable) image into ``ValueError``.

        The featuriser then marks that image absent and records a QualityNote.
        """
        cache = self.image
        if cache is None:
            return None

        def lookup(key: str) -> npt.NDArray[np.float32]:
            if key not in cache:
                raise ValueError(f"image could not be decoded when caching ({key})")
            return cache[key]

        return lookup


def prepare_caches(
    cohort: Path,
    scan: CohortScan,
    *,
    text_path: str | None,
    image_weights: str | None,
    max_tokens: int,
    ctx: DistContext,
    progress: bool,
    image_encoder: ImageEncoder | None = None,
) -> Caches:
    """Fill (rank 0) or open (other ranks) the text and image caches of ``cohort``.

    ``image_encoder``: the backbone a loaded checkpoint carries (evaluation); by default
    the one training uses (local weights, else the shared random initialisation).
    """
    text_cache = image_cache = None
    text_dim = TEXT_DIM_UNUSED
    if scan.text_items:
        from moe_core.encoders.text import default_text_encoder_path

        folder = Path(text_path) if text_path else default_text_encoder_path()
        pooling = TextEncoderConfig().pooling
        ident = folder_identity("text", folder, pooling=pooling, max_tokens=max_tokens)
        text_cache = EmbeddingCache(
            cohort, Modality.TEXT, ident, encoder=str(folder), max_tokens=max_tokens
        )
        missing = {k: t for k, t in scan.text_items.items() if k not in text_cache}
        if ctx.is_main and missing:
            enc = text_embedder(text_path).to(ctx.device)
            fill_text_cache(
                text_cache, missing, enc.embed, load_tokenizer(text_path),
                max_tokens=max_tokens, device=ctx.device, progress=progress,
            )  # fmt: skip
            del enc
        text_dim = _text_width(folder)
    if scan.image_items:
        img = (image_encoder or image_embedder(image_weights)).to(ctx.device)
        ident = encoder_identity("image", img.backbone)
        image_cache = EmbeddingCache(
            cohort, Modality.IMAGE, ident,
            encoder=image_weights or f"densenet121 random init, seed {IMAGE_INIT_SEED}",
        )  # fmt: skip
        if ctx.is_main:
            fill_image_cache(
                image_cache, scan.image_items, img.embed, device=ctx.device, progress=progress
            )
    barrier(ctx)
    if not ctx.is_main:  # re-open what rank 0 wrote
        if text_cache is not None:
            text_cache = EmbeddingCache(cohort, Modality.TEXT, text_cache.identity)
        if image_cache is not None:
            image_cache = EmbeddingCache(cohort, Modality.IMAGE, image_cache.identity)
    return Caches(text_cache, image_cache, text_dim, IMAGE_DIM)


def featurise_splits(
    cohort: Path,
    spec: FeatureSpec,
    stats: NormStats,
    caches: Caches,
    splits: tuple[str, ...] = SPLIT_NAMES,
) -> dict[str, FeaturizedSplit]:
    """Every requested split as tensors (one streaming pass), cached embeddings inside."""
    featurizer = RecordFeaturizer(
        spec, stats, text_cache=caches.text, image_cache=caches.image_lookup()
    )
    builders = {
        s: SplitBuilder(featurizer, text_dim=caches.text_dim, image_dim=caches.image_dim)
        for s in splits
    }
    split_of = _split_of(cohort)
    for rec in read_records(cohort):
        builder = builders.get(split_of.get(rec.encounter_id, ""))
        if builder is not None:
            builder.add(rec)
    return {s: b.finish() for s, b in builders.items()}
