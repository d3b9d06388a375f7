"""End-to-end fine-tuning data: records featurised per batch into tokens and pixels.

Used by ``train`` with ``fine_tune=True``: the text transformer and DenseNet-121 train
with the rest of the model, so nothing can be cached. The records of the training and
validation splits are held in memory (images stay lazy: pixels are decoded per batch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from moe_core.encoders.text import load_tokenizer
from moe_core.feature_catalog import DEFAULT_SPEC
from moe_core.feature_spec import FeatureSpec, NormStats
from moe_core.features import RecordFeaturizer
from moe_core.records import PatientRecord
from training.cohort_store import read_records
from training.data import RecordSplit, fit_norm_stats, patterns_seen
from training.ddp import DistContext
from training.prepare import CohortScan
from training.splits import SPLIT_NAMES, TRAIN, VAL

if TYPE_CHECKING:
    from training.train import PreparedCohort, TrainConfig

__all__ = ["prepare_finetune", "token_splits"]


def token_splits(
    records: Mapping[str, Sequence[PatientRecord]],
    spec: FeatureSpec,
    stats: NormStats,
    text_path: str | None,
    max_tokens: int,
) -> dict[str, RecordSplit]:
    """Splits featurised per batch into tokens and pixels (no embedding caches): for
    training a model end to end, and for evaluating a model trained so."""
    tokenizer = load_tokenizer(text_path)
    featurizer = RecordFeaturizer(spec, stats, tokenizer=tokenizer, max_tokens=max_tokens)
    return {s: RecordSplit(list(r), featurizer) for s, r in records.items()}


def prepare_finetune(
    cohort: Path, cfg: TrainConfig, ctx: DistContext, spec: FeatureSpec = DEFAULT_SPEC
) -> PreparedCohort:
    """Training-split NormStats and per-batch featurising splits (tokens + pixels)."""
    from training.train import PreparedCohort

    records = {s: list(read_records(cohort, s)) for s in SPLIT_NAMES}
    if not records[TRAIN] or not records[VAL]:
        raise ValueError(f"cohort {cohort} needs train and val admissions")
    stats = fit_norm_stats(spec, records[TRAIN])
    combos = patterns_seen(records[TRAIN])
    if not combos:
        raise ValueError(f"cohort {cohort} has no training admission with any modality")
    text_path = str(cfg.text_encoder) if cfg.text_encoder else None
    scan = CohortScan(stats, combos, {s: len(r) for s, r in records.items()})
    splits = token_splits(records, spec, stats, text_path, cfg.max_tokens)
    return PreparedCohort(cohort, spec, scan, None, dict(splits))
