"""Evaluation: test-split metrics with CIs, per-combination results, calibration, gates.

For each task the F1 threshold is the one that maximises F1 on the validation split;
it is then applied unchanged to the test split. AUROC, AUPRC, F1 and Brier come with
seeded bootstrap 95% CIs. Abstained admissions (no modality) and unknown labels are
left out of every metric. ``run_evaluation`` scores a checkpoint: frozen encoders use
the cohort's embedding caches; a fine-tuned checkpoint (text or image encoder trained)
is fed tokens and pixels so its own encoders run, never the original encoders' caches;
``run_paper`` (``training.paper``) trains and scores every model of the paper's tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from moe_core.feature_catalog import DEFAULT_SPEC
from moe_core.modalities import AVAILABILITY_PATTERNS, pattern_name
from training.metrics import (
    auprc,
    auroc,
    best_f1_threshold,
    bootstrap_ci,
    reliability_bins,
    task_metrics,
)
from training.predict import Predictions, SplitLike

if TYPE_CHECKING:
    from moe_core.base import FusionModel
    from moe_core.feature_spec import NormStats
    from training.data import RecordSplit

__all__ = [
    "EvalConfig",
    "evaluate_predictions",
    "gate_by_combination",
    "per_combination",
    "run_evaluation",
    "run_paper",
]


@dataclass(frozen=True, slots=True)
class EvalConfig:
    """Bootstrap resamples, seeds and device for evaluation."""

    n_bootstrap: int = 1000
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.n_bootstrap < 0:
            raise ValueError(f"n_bootstrap must be >= 0, got {self.n_bootstrap}")


def evaluate_predictions(
    val: Predictions, test: Predictions, *, n_boot: int, seed: int
) -> dict[str, Any]:
    """Per task: validation threshold, test metrics with CIs, reliability bins, counts."""
    out: dict[str, Any] = {}
    for i, task in enumerate(test.tasks):
        yv, pv, _ = val.task_arrays(task)
        yt, pt, _ = test.task_arrays(task)
        thr = best_f1_threshold(yv, pv)
        metrics = task_metrics(yt, pt, threshold=thr, n_boot=n_boot, seed=seed + 10 * i)
        out[task] = {
            "threshold": round(thr, 6),
            "n": int(yt.size),
            "positives": int(yt.sum()),
            "metrics": {k: v.to_dict() for k, v in metrics.items()},
            "reliability": reliability_bins(yt, pt),
        }
    return out


def per_combination(test: Predictions, *, n_boot: int, seed: int) -> dict[str, Any]:
    """Paper Table 2: AUROC and AUPRC per availability combination and task (test)."""
    out: dict[str, Any] = {}
    for pattern in AVAILABILITY_PATTERNS:
        rows = np.all(test.present == np.array(pattern), axis=1)
        if not rows.any():
            continue
        entry: dict[str, Any] = {"n": int(rows.sum())}
        for task in test.tasks:
            y, p, keep = test.task_arrays(task)
            sel = rows[keep]
            entry[task] = {
                "n": int(sel.sum()),
                "auroc": bootstrap_ci(y[sel], p[sel], auroc, n_boot=n_boot, seed=seed).to_dict(),
                "auprc": bootstrap_ci(y[sel], p[sel], auprc, n_boot=n_boot, seed=seed).to_dict(),
            }
        out[pattern_name(pattern)] = entry
    return out


def gate_by_combination(test: Predictions) -> dict[str, list[float]]:
    """Mean routing weight of each expert per availability combination (heat-map rows)."""
    if test.expert_weights.shape[1] == 0:
        return {}
    out: dict[str, list[float]] = {}
    for pattern in AVAILABILITY_PATTERNS:
        rows = np.all(test.present == np.array(pattern), axis=1) & ~test.abstain
        if rows.any():
            out[pattern_name(pattern)] = [
                round(float(x), 4) for x in test.expert_weights[rows].mean(axis=0)
            ]
    return out


def fine_tuned(model: FusionModel) -> bool:
    """True when the model's text or image encoder was trained (not frozen)."""
    return not (model.config.text.freeze and model.config.image.freeze)


def record_splits(
    cohort: Path,
    model: FusionModel,
    stats: NormStats,
    max_tokens: int,
    splits: tuple[str, ...],
) -> dict[str, RecordSplit]:
    """Splits featurised per batch into tokens and pixels (no embedding caches)."""
    from training.cohort_store import read_records
    from training.finetune import token_splits

    records = {s: list(read_records(cohort, s)) for s in splits}
    return token_splits(records, DEFAULT_SPEC, stats, model.config.text.path, max_tokens)


def run_evaluation(cohort: Path, checkpoint: Path, out: Path | None, cfg: EvalConfig) -> str:
    """Score a checkpoint on the cohort's test split; write a report when ``out`` is set."""
    from moe_core.checkpoint import load_checkpoint
    from training.ddp import init_distributed
    from training.predict import predict_split
    from training.prepare import (
        DEFAULT_MAX_TOKENS,
        featurise_splits,
        prepare_caches,
        scan_cohort,
    )
    from training.report import write_checkpoint_report
    from training.splits import TEST, VAL

    ctx = init_distributed(cfg.device)
    loaded = load_checkpoint(checkpoint, spec=DEFAULT_SPEC, device=ctx.device,
                             load_text_backbone=False)  # fmt: skip
    model = loaded.model
    train_cfg = loaded.meta.get("training", {}).get("train_config", {})
    max_tokens = int(train_cfg.get("max_tokens") or DEFAULT_MAX_TOKENS)
    splits: Mapping[str, SplitLike]
    if fine_tuned(model):
        # The checkpoint carries its own (trained) encoders: feed them tokens and pixels,
        # as training did; cached embeddings of the original encoders would be stale.
        splits = record_splits(cohort, model, loaded.stats, max_tokens, (VAL, TEST))
    else:
        scan = scan_cohort(cohort, DEFAULT_SPEC)
        caches = prepare_caches(
            cohort,
            scan,
            text_path=model.config.text.path,
            image_weights=model.config.image.state_dict_path,
            max_tokens=max_tokens,
            ctx=ctx,
            progress=cfg.progress,
            image_encoder=model.encoders.image,
        )
        splits = featurise_splits(cohort, DEFAULT_SPEC, loaded.stats, caches, (VAL, TEST))
    val = predict_split(model, splits[VAL], ctx.device)
    test = predict_split(model, splits[TEST], ctx.device)
    result = {
        "checkpoint": str(checkpoint),
        "model": loaded.meta.get("kind"),
        "tasks": evaluate_predictions(val, test, n_boot=cfg.n_bootstrap, seed=cfg.seed),
        "per_combination": per_combination(test, n_boot=cfg.n_bootstrap, seed=cfg.seed),
        "gates": gate_by_combination(test),
        "expert_names": test.expert_names,
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
        return write_checkpoint_report(out, result, test)
    from training.report import checkpoint_markdown

    return checkpoint_markdown(result)


def run_paper(
    cohort: Path, out: Path, cfg: EvalConfig, *, epochs: int, hidden: int,
    pretrain_epochs: int = 2,
) -> str:  # fmt: skip
    """Train and evaluate every model of the paper's Tables 1-3 (see ``training.paper``)."""
    from training.paper import PaperConfig, reproduce_tables

    pcfg = PaperConfig(epochs=epochs, hidden=hidden, pretrain_epochs=pretrain_epochs)
    text: str = reproduce_tables(cohort, out, pcfg, cfg)
    return text
