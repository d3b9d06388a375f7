"""Training: expert pre-training, then joint training with early stopping (section 3.2.2).

Paper defaults (section 4.3): AdamW, lr 1e-4, batch 32, at most 50 epochs, early
stopping on the validation AUROC (mean over the trained tasks whose validation labels
hold both classes), alpha 0.01, top-2 routing. For MoE-Health with specialised experts
each expert is first pre-trained alone on the training admissions of its own modality
combination (``moe_core.model.expert_pretraining_loss``), updating that expert and the
shared encoders, missing embeddings and heads; then everything trains jointly.

Frozen encoders (default) train on cached embeddings (``training.embedding_cache``);
``fine_tune`` trains them end to end on tokens and pixels. ``NormStats`` are fitted on
the training split only. Each epoch writes ``last.pt`` (resumable with ``resume``),
``metrics.csv`` and ``metrics.jsonl``; the best epoch's weights end up in the final
checkpoint folder ``model/`` written with ``moe_core.checkpoint``. Under ``torchrun`` the
joint phase is DDP (``training.ddp``); expert pre-training runs identically on every
rank (same data, same seed), which keeps ranks in step without communication.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from moe_core.base import FusionModel
from moe_core.feature_catalog import DEFAULT_SPEC
from moe_core.feature_spec import FeatureSpec, NormStats
from moe_core.losses import total_loss
from moe_core.modalities import TASKS
from moe_core.model import MoEHealth, expert_pretraining_loss
from training.data import FeaturizedSplit, RecordSplit, label_rates
from training.ddp import DistContext, agree_on_all_ranks, barrier, init_distributed, shutdown
from training.final_checkpoint import write_final
from training.metrics import auprc, auroc
from training.models import ModelChoice, build_model, model_config
from training.predict import Predictions, SplitLike, predict_split
from training.prepare import (
    DEFAULT_MAX_TOKENS,
    Caches,
    CohortScan,
    featurise_splits,
    prepare_caches,
    scan_cohort,
)
from training.run_log import RunLog, load_state, save_state
from training.splits import TRAIN, VAL

__all__ = [
    "PreparedCohort",
    "TrainConfig",
    "TrainResult",
    "prepare_cohort",
    "run_training",
    "set_determinism",
    "train_model",
    "val_score",
]

FINAL_CHECKPOINT = "model"  # a moe_core.checkpoint folder
MONITORS = {"auroc": auroc, "auprc": auprc}


@dataclass(slots=True)
class TrainConfig:
    """Every training option (see ``moe-health train --help``)."""

    model: str = "moe"
    ablation: str | None = None
    tasks: tuple[str, ...] = tuple(t.key for t in TASKS)
    epochs: int = 50
    pretrain_epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-2
    alpha: float = 0.01
    top_k: int = 2
    hidden: int = 128
    patience: int = 5
    monitor: str = "auroc"
    fine_tune: bool = False
    text_encoder: Path | None = None
    image_weights: Path | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    tensorboard: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        known = {t.key for t in TASKS}
        bad: dict[str, object] = {}
        if not self.tasks or any(t not in known for t in self.tasks):
            bad["tasks"] = self.tasks
        if self.monitor not in MONITORS:
            bad["monitor"] = self.monitor
        for name in ("epochs", "batch_size", "patience", "top_k", "hidden", "max_tokens"):
            if getattr(self, name) < 1:
                bad[name] = getattr(self, name)
        if not self.lr > 0:
            bad["lr"] = self.lr
        if bad:
            raise ValueError(f"TrainConfig: invalid values {bad}")
        ModelChoice(self.model, self.ablation)  # validates kind/ablation

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["text_encoder"] = str(self.text_encoder) if self.text_encoder else None
        d["image_weights"] = str(self.image_weights) if self.image_weights else None
        d["tasks"] = list(self.tasks)
        return d


@dataclass(slots=True)
class TrainResult:
    """What a run produced."""

    checkpoint: Path
    best_epoch: int
    best_score: float
    epochs_run: int
    val: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_text(self) -> str:
        per_task = ", ".join(f"{k} {v:.3f}" for k, v in self.val.items())
        return (
            f"trained {self.epochs_run} epochs in {self.seconds:.1f} s; best epoch "
            f"{self.best_epoch} (validation score {self.best_score:.4f}: {per_task})\n"
            f"checkpoint: {self.checkpoint}"
        )


def set_determinism(seed: int) -> None:
    """Seed every generator and ask torch for deterministic kernels where it has them."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


def val_score(preds: Predictions, tasks: tuple[str, ...], monitor: str) -> dict[str, float]:
    """The monitored metric per task (NaN where validation has one class only)."""
    fn = MONITORS[monitor]
    out = {}
    for task in tasks:
        y, p, _ = preds.task_arrays(task)
        out[task] = fn(y, p)
    return out


def _mean(values: dict[str, float]) -> float:
    finite = [v for v in values.values() if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _batches(order: list[int], size: int) -> list[list[int]]:
    return [order[i : i + size] for i in range(0, len(order), size)]


def _pretrain_experts(
    model: MoEHealth, train: FeaturizedSplit | RecordSplit, cfg: TrainConfig, ctx: DistContext
) -> None:
    """Pre-train each specialised expert on its own combination's training rows."""
    combos = model.config.moe.combinations
    present = train.present
    expert_ids = {id(p) for i in range(len(combos)) for p in model.expert_parameters(i)}
    gate_ids = {id(p) for p in model.gate.parameters()} if model.gate is not None else set()
    shared = [
        p for p in model.parameters()
        if p.requires_grad and id(p) not in expert_ids and id(p) not in gate_ids
    ]  # fmt: skip
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    model.train()
    for idx, combo in enumerate(combos):
        rows = (present == torch.tensor(combo)).all(dim=1).nonzero(as_tuple=True)[0]
        if rows.numel() == 0:
            continue
        params = [*model.expert_parameters(idx), *shared]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        desc = f"pre-train {model.expert_names[idx]}"
        quiet = not (cfg.progress and ctx.is_main)
        for _ in tqdm(range(cfg.pretrain_epochs), desc=desc, disable=quiet):
            order = rows[torch.randperm(rows.numel(), generator=gen)].tolist()
            for chunk in _batches(order, cfg.batch_size):
                batch = train.batch(chunk).to(ctx.device)
                loss = expert_pretraining_loss(model, batch, idx)
                if loss is None:
                    continue
                opt.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()


def _fit(
    model: FusionModel,
    train: FeaturizedSplit | RecordSplit,
    val: FeaturizedSplit | RecordSplit,
    cfg: TrainConfig,
    ctx: DistContext,
    out: Path,
    log: RunLog,
    extra_state: dict[str, Any],
) -> tuple[int, float, dict[str, float], int]:
    """Joint training with early stopping; returns (best epoch, score, per task, epochs)."""
    net: nn.Module = model
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler: DistributedSampler[int] = DistributedSampler(
        range(len(train)),  # type: ignore[arg-type]  # any sized sequence works
        num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
        seed=cfg.seed,
    )  # fmt: skip
    state = load_state(out) if cfg.resume else None
    start, best_epoch, best, best_tasks, bad = 0, -1, -math.inf, {}, 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, best_epoch, best = state["epoch"] + 1, state["best_epoch"], state["best_score"]
        best_tasks, bad = state["best_tasks"], state["bad_epochs"]
        torch.set_rng_state(state["rng"])
    cols = model.config.task_columns
    amp = ctx.device.type == "cuda"
    epochs = start
    for epoch in range(start, cfg.epochs):
        if bad >= cfg.patience:
            break
        started = time.perf_counter()
        sampler.set_epoch(epoch)
        net.train()
        total, steps = 0.0, 0
        bar = tqdm(_batches(list(sampler), cfg.batch_size), desc=f"epoch {epoch + 1}",
                   disable=not (cfg.progress and ctx.is_main), leave=False)  # fmt: skip
        for chunk in bar:
            batch = train.batch(chunk).to(ctx.device)
            with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=amp):
                out_b = net(batch)
            loss, _ = total_loss(out_b, batch, cols)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            total += float(loss.item())
            steps += 1
        preds = predict_split(model, val, ctx.device)
        per_task = val_score(preds, model.tasks, cfg.monitor)
        score = _mean(per_task)
        if math.isnan(score):  # no validation task has both classes: fall back on loss
            score = -_val_loss(model, val, ctx)
        improved = score > best + 1e-6
        if improved:
            best, best_epoch, best_tasks, bad = score, epoch, per_task, 0
            if ctx.is_main:
                torch.save(model.state_dict(), out / "best_state.pt")
        else:
            bad += 1
        epochs = epoch + 1
        if ctx.is_main:
            log.epoch(epoch + 1, train_loss=total / max(steps, 1), val_score=score,
                      per_task=per_task, seconds=time.perf_counter() - started)  # fmt: skip
            save_state(out, {
                "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "best_epoch": best_epoch, "best_score": best, "best_tasks": best_tasks,
                "bad_epochs": bad, "rng": torch.get_rng_state(), **extra_state,
            })  # fmt: skip
    return best_epoch, best, best_tasks, epochs


@torch.no_grad()
def _val_loss(model: FusionModel, val: SplitLike, ctx: DistContext) -> float:
    model.eval()
    losses = []
    for chunk in _batches(list(range(len(val))), 256):
        batch = val.batch(chunk).to(ctx.device)
        losses.append(float(total_loss(model(batch), batch, model.config.task_columns)[1]))
    model.train()
    return sum(losses) / max(len(losses), 1)


@dataclass(slots=True)
class PreparedCohort:
    """A cohort ready for any number of models: statistics, caches, featurised splits."""

    folder: Path
    spec: FeatureSpec
    scan: CohortScan
    caches: Caches | None  # None: end-to-end fine-tuning (no embedding caches)
    splits: dict[str, FeaturizedSplit | RecordSplit]

    @property
    def stats(self) -> NormStats:
        return self.scan.stats


def _cohort_window_hours(cohort: Path) -> int | None:
    """The observation window the cohort was built with (its ``summary.json``)."""
    from training.cohort_store import read_summary

    try:
        value = read_summary(cohort).get("window_hours")
    except ValueError:  # CohortFormatError: no summary (a cohort written by hand)
        return None
    return int(value) if value is not None else None


def prepare_cohort(
    cohort: Path, cfg: TrainConfig, ctx: DistContext, spec: FeatureSpec = DEFAULT_SPEC
) -> PreparedCohort:
    """Scan (NormStats on the training split only), fill caches, featurise every split."""
    scan = scan_cohort(cohort, spec)
    if not scan.combinations:
        raise ValueError(f"cohort {cohort} has no training admission with any modality")
    if not scan.counts.get(VAL):
        raise ValueError(f"cohort {cohort} has no validation admissions (see splits.json)")
    caches = prepare_caches(
        cohort,
        scan,
        text_path=str(cfg.text_encoder) if cfg.text_encoder else None,
        image_weights=str(cfg.image_weights) if cfg.image_weights else None,
        max_tokens=cfg.max_tokens,
        ctx=ctx,
        progress=cfg.progress,
    )
    splits = featurise_splits(cohort, spec, scan.stats, caches)
    return PreparedCohort(cohort, spec, scan, caches, dict(splits.items()))


def train_model(
    data: PreparedCohort, out: Path, cfg: TrainConfig, ctx: DistContext
) -> tuple[FusionModel, TrainResult]:
    """Train one model on prepared data; rank 0 writes the run folder ``out``."""
    started = time.perf_counter()
    set_determinism(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    train, val = data.splits[TRAIN], data.splits[VAL]
    choice = ModelChoice(cfg.model, cfg.ablation)
    mcfg = model_config(
        data.spec, choice, combinations=data.scan.combinations, tasks=cfg.tasks,
        hidden=cfg.hidden, top_k=cfg.top_k, alpha=cfg.alpha,
        text_dim=data.caches.text_dim if data.caches else None,
        text_path=str(cfg.text_encoder) if cfg.text_encoder else None,
        image_weights=str(cfg.image_weights) if cfg.image_weights else None,
        fine_tune=cfg.fine_tune,
    )  # fmt: skip
    model = build_model(choice, mcfg).to(ctx.device)
    rates = label_rates(train.labels, train.label_mask)
    model.set_prior([rates[c] for c in mcfg.task_columns])
    state = load_state(out) if cfg.resume else None
    resuming = state is not None
    done = int(state["epoch"]) + 1 if state is not None else None
    del state
    log = RunLog(out, enabled=ctx.is_main, tensorboard=cfg.tensorboard, resumed_after=done)
    if (isinstance(model, MoEHealth) and mcfg.moe.experts == "specialised"
            and cfg.pretrain_epochs > 0 and not resuming):  # fmt: skip
        _pretrain_experts(model, train, cfg, ctx)
    extra = {"train_config": cfg.to_dict(), "model_config": mcfg.to_dict()}
    best_epoch, best, per_task, epochs = _fit(model, train, val, cfg, ctx, out, log, extra)
    best_file = out / "best_state.pt"
    barrier(ctx)
    if best_file.is_file():
        model.load_state_dict(torch.load(best_file, map_location=ctx.device))
    from training.embedding_cache import state_dict_hash

    if not agree_on_all_ranks(state_dict_hash(model), ctx):
        raise RuntimeError("DDP ranks ended training with different weights")
    final = out / FINAL_CHECKPOINT
    if ctx.is_main:
        write_final(final, model, data.spec, data.stats, cfg=cfg, best_epoch=best_epoch + 1,
                    val=per_task, caches=data.caches, world_size=ctx.world_size,
                    window_hours=_cohort_window_hours(data.folder))  # fmt: skip
    log.close()
    result = TrainResult(final, best_epoch + 1, best, epochs, per_task,
                         time.perf_counter() - started)  # fmt: skip
    return model, result


def run_training(cohort: Path, out: Path, cfg: TrainConfig) -> TrainResult:
    """Train on ``cohort`` (folder from build-cohort) and write the run into ``out``."""
    ctx = init_distributed(cfg.device)
    try:
        set_determinism(cfg.seed)
        if cfg.fine_tune:
            from training.finetune import prepare_finetune

            data = prepare_finetune(cohort, cfg, ctx)
        else:
            data = prepare_cohort(cohort, cfg, ctx)
        return train_model(data, out, cfg, ctx)[1]
    finally:
        shutdown(ctx)
