"""Training: embedding caches, train-only NormStats, expert pre-training, early stopping,
resume, checkpoints, baselines and ablations."""

from __future__ import annotations

import csv
import json
import math
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import torch
from torch import nn

from moe_core.checkpoint import load_checkpoint
from moe_core.encoders.text import TextEncoderConfig, default_text_encoder_path
from moe_core.feature_catalog import DEFAULT_SPEC
from moe_core.modalities import Modality
from moe_core.records import Demographics, Event, PatientRecord
from tests.training.conftest import TINY
from training.data import fit_norm_stats
from training.embedding_cache import EmbeddingCache, encoder_identity, folder_identity
from training.models import ModelChoice
from training.train import TrainConfig, run_training


def _record(pid: str, hr: float, age: float, hours: float) -> PatientRecord:
    t0 = datetime(2150, 1, 1, tzinfo=UTC)
    return PatientRecord(
        pid, pid + "-e", t0, t0 + timedelta(hours=48), static=Demographics(age=age),
        events=[Event(t0 + timedelta(hours=hours), "heart_rate", hr)],
    )  # fmt: skip


def test_norm_stats_use_only_in_window_values() -> None:
    recs = [_record("a", 80.0, 50.0, 1.0), _record("b", 100.0, 70.0, 2.0),
            _record("c", 1000.0, 60.0, 60.0)]  # fmt: skip  # c's value is after prediction
    stats = fit_norm_stats(DEFAULT_SPEC, recs)
    col = DEFAULT_SPEC.index()["heart_rate"]
    assert stats.mean[col] == pytest.approx(90.0)
    assert stats.std[col] == pytest.approx(10.0)
    assert stats.age_mean == pytest.approx(60.0)
    untouched = DEFAULT_SPEC.index()["sodium"]
    assert (stats.mean[untouched], stats.std[untouched]) == (0.0, 1.0)


def test_cache_identity_changes_with_encoder_weights(tmp_path: Path) -> None:
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    assert encoder_identity("image", a) != encoder_identity("image", b)
    assert encoder_identity("text", a, max_tokens=64) != encoder_identity("text", a, max_tokens=128)
    cache = EmbeddingCache(tmp_path, Modality.TEXT, encoder_identity("text", a))
    cache.add(["k1", "k2"], torch.ones(2, 4).numpy())
    reopened = EmbeddingCache(tmp_path, Modality.TEXT, encoder_identity("text", a))
    assert set(reopened) == {"k1", "k2"} and reopened.dim == 4
    other = EmbeddingCache(tmp_path, Modality.TEXT, encoder_identity("text", b))
    assert len(other) == 0


def test_ablation_needs_moe() -> None:
    with pytest.raises(ValueError, match="moe only"):
        ModelChoice("medfuse", "top-1")
    with pytest.raises(ValueError, match="unknown model"):
        ModelChoice("transformer")


@pytest.fixture(scope="module")
def moe_run(synth_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    run_training(synth_cohort, out, TrainConfig(epochs=3, pretrain_epochs=1, seed=3, **TINY))
    return out


def test_training_writes_checkpoint_metrics_and_caches(moe_run: Path, synth_cohort: Path) -> None:
    loaded = load_checkpoint(moe_run / "model", spec=DEFAULT_SPEC, load_text_backbone=False)
    assert loaded.meta["kind"] == "moe"
    rows = list(csv.DictReader((moe_run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    summary = json.loads((moe_run / "train_summary.json").read_text())
    assert summary["best_epoch"] in (1, 2, 3)
    assert loaded.meta["training"]["window_hours"] == 48  # the cohort's window, for serving
    # the cohort is shared with other tests (other token limits, other caches): look for
    # the caches of this run's encoders by their identity
    names = {p.name for p in (synth_cohort / "embeddings").iterdir()}
    text_ident = folder_identity(
        "text", default_text_encoder_path(), pooling=TextEncoderConfig().pooling,
        max_tokens=TINY["max_tokens"],
    )  # fmt: skip
    assert f"text-{text_ident}" in names
    assert {n.split("-")[0] for n in names} == {"image", "text"}
    # NormStats in the checkpoint come from the training split only
    train_only = fit_norm_stats(DEFAULT_SPEC, _split_records(synth_cohort, "train"))
    assert loaded.stats == train_only


def _split_records(cohort: Path, split: str) -> list[PatientRecord]:
    from training.cohort_store import read_records

    return list(read_records(cohort, split))


def test_same_seed_gives_same_weights(moe_run: Path, synth_cohort: Path, tmp_path: Path) -> None:
    run_training(synth_cohort, tmp_path, TrainConfig(epochs=3, pretrain_epochs=1, seed=3, **TINY))
    a = (moe_run / "model" / "model.safetensors").read_bytes()
    b = (tmp_path / "model" / "model.safetensors").read_bytes()
    assert a == b


def test_resume_continues_from_last_epoch(
    synth_cohort: Path, moe_run: Path, tmp_path: Path
) -> None:
    shutil.copytree(moe_run, tmp_path / "run")
    cfg = TrainConfig(epochs=5, pretrain_epochs=1, seed=3, resume=True, patience=10, **TINY)
    run_training(synth_cohort, tmp_path / "run", cfg)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(("model", "ablation"), [
    ("medfuse", None), ("late", None), ("unimodal-ehr", None), ("moe", "generic-experts"),
])  # fmt: skip
def test_baselines_and_ablations_train(
    synth_cohort: Path, tmp_path: Path, model: str, ablation: str | None
) -> None:
    cfg = TrainConfig(model=model, ablation=ablation, epochs=1, tasks=("mortality",), **TINY)
    result = run_training(synth_cohort, tmp_path, cfg)
    loaded = load_checkpoint(result.checkpoint, spec=DEFAULT_SPEC, load_text_backbone=False)
    assert loaded.model.tasks == ("mortality",)


def test_fresh_run_truncates_the_metrics_logs(moe_run: Path, tmp_path: Path) -> None:
    from training.run_log import METRICS_JSONL, RunLog

    shutil.copytree(moe_run, tmp_path / "run")
    log = RunLog(tmp_path / "run")  # not resuming: earlier rows must go
    log.epoch(1, train_loss=0.5, val_score=0.6, per_task={"mortality": 0.6}, seconds=1.0)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1]
    lines = (tmp_path / "run" / METRICS_JSONL).read_bytes().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1]


def test_resume_drops_rows_logged_after_the_saved_epoch(moe_run: Path, tmp_path: Path) -> None:
    """A crash after logging epoch 3 but with the state of epoch 2: resume logs 3 once."""
    from training.run_log import METRICS_JSONL, RunLog

    shutil.copytree(moe_run, tmp_path / "run")
    RunLog(tmp_path / "run", resumed_after=2)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert set(rows[0]) >= {"epoch", "train_loss", "val_score", "val_mortality"}
    lines = (tmp_path / "run" / METRICS_JSONL).read_bytes().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


def test_training_again_without_resume_starts_the_log_afresh(
    synth_cohort: Path, moe_run: Path, tmp_path: Path
) -> None:
    shutil.copytree(moe_run, tmp_path / "run")
    run_training(synth_cohort, tmp_path / "run",
                 TrainConfig(epochs=1, pretrain_epochs=0, seed=3, **TINY))  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1]


def test_early_stopping_stops_when_validation_auroc_stalls(
    synth_cohort: Path, tmp_path: Path
) -> None:
    # A learning rate this small leaves the validation AUROC unchanged after epoch 1.
    cfg = TrainConfig(epochs=20, pretrain_epochs=0, patience=2, lr=1e-12, seed=3, **{
        k: v for k, v in TINY.items() if k != "lr"})  # fmt: skip
    result = run_training(synth_cohort, tmp_path, cfg)
    assert result.epochs_run == 3 < cfg.epochs  # epoch 1 best, then 2 without improvement
    assert result.best_epoch == 1
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert len(rows) == 3
    assert not math.isnan(float(rows[0]["val_score"]))


def test_train_defaults_are_the_papers() -> None:
    """Section 4.3: AdamW lr 1e-4, batch 32, at most 50 epochs, alpha 0.01, top-2,
    early stopping on validation AUROC; the CLI has the same defaults."""
    import inspect

    from training.cli import train

    cfg = TrainConfig()
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.alpha, cfg.top_k, cfg.monitor) == (
        1e-4, 32, 50, 0.01, 2, "auroc"
    )  # fmt: skip
    options = inspect.signature(train).parameters
    for name in ("lr", "batch_size", "epochs", "alpha", "top_k", "monitor", "hidden",
                 "pretrain_epochs", "patience", "weight_decay"):  # fmt: skip
        assert options[name].default.default == getattr(cfg, name), name
    source = inspect.getsource(__import__("training.train", fromlist=["_fit"])._fit)
    assert "torch.optim.AdamW" in source
