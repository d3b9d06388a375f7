"""``moe-health evaluate --paper``: train and score every model of the paper's tables.

The cohort is prepared once (NormStats, embedding caches, featurised splits) and every
model trains on the same tensors with the same seed:

* Table 1 (baselines): unimodal EHR / notes / CXR, early, joint and late fusion,
  MedFuse and MoE-Health, on all tasks of the cohort, test AUROC / AUPRC / F1;
* Table 2: MoE-Health per availability combination, reported per test subgroup of the
  one model trained on all admissions (the paper's modality subsets are not retrained);
* Table 3 (ablations, in-hospital mortality AUROC): zero-padding instead of missing
  embeddings, generic experts, uniform gating, top-1 routing, and the full model.

Outputs in ``out``: ``paper.md``, ``paper.json``, ``roc_<task>.png`` (all Table 1
models), ``gates.png`` (MoE-Health heat map) and ``reliability.png``; every model's run
folder is under ``runs/``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from moe_core.modalities import Modality
from training.evaluate import EvalConfig, evaluate_predictions, gate_by_combination, per_combination
from training.models import ModelChoice
from training.predict import Predictions, predict_split
from training.report import fmt_ci, plot_gate_heatmap, plot_reliability, plot_roc
from training.splits import TEST, VAL

__all__ = [
    "ABLATION_ROWS",
    "BASELINE_ROWS",
    "PAPER_EPOCHS",
    "TABLE2_NOTE",
    "PaperConfig",
    "reproduce_tables",
    "scale_note",
]

BASELINE_ROWS: tuple[tuple[str, ModelChoice], ...] = (
    ("Unimodal EHR", ModelChoice("unimodal-ehr")),
    ("Unimodal notes", ModelChoice("unimodal-text")),
    ("Unimodal CXR", ModelChoice("unimodal-image")),
    ("Early fusion", ModelChoice("early")),
    ("Joint fusion", ModelChoice("joint")),
    ("Late fusion", ModelChoice("late")),
    ("MedFuse", ModelChoice("medfuse")),
    ("MoE-Health", ModelChoice("moe")),
)
ABLATION_ROWS: tuple[tuple[str, ModelChoice], ...] = (
    ("w/o missing indicator (zero-padding)", ModelChoice("moe", "zero-padding")),
    ("w/o expert specialisation (generic experts)", ModelChoice("moe", "generic-experts")),
    ("w/o dynamic gating (uniform)", ModelChoice("moe", "uniform-gating")),
    ("w/o top-k routing (top-1)", ModelChoice("moe", "top-1")),
)
_UNIMODAL_NEEDS = {"unimodal-text": Modality.TEXT, "unimodal-image": Modality.IMAGE}


@dataclass(frozen=True, slots=True)
class PaperConfig:
    """How much to train each model (few epochs by default: a smoke-scale reproduction)."""

    epochs: int = 10
    hidden: int = 128
    pretrain_epochs: int = 2
    batch_size: int = 32
    lr: float = 1e-4
    patience: int = 3
    max_tokens: int = 512


def _row(name: str, result: dict[str, Any]) -> str:
    cells = []
    for r in result.values():
        m = r["metrics"]
        cells.append(f"{fmt_ci(m['auroc'])} | {fmt_ci(m['auprc'])} | {fmt_ci(m['f1'])}")
    return f"| {name} | " + " | ".join(cells) + " |"


def reproduce_tables(cohort: Path, out: Path, pcfg: PaperConfig, ecfg: EvalConfig) -> str:
    """Train every model, evaluate on test, write Markdown + JSON + PNG into ``out``."""
    from training.ddp import init_distributed, shutdown
    from training.train import TrainConfig, prepare_cohort, train_model

    out.mkdir(parents=True, exist_ok=True)
    ctx = init_distributed(ecfg.device)
    base = TrainConfig(
        epochs=pcfg.epochs, pretrain_epochs=pcfg.pretrain_epochs, batch_size=pcfg.batch_size,
        lr=pcfg.lr, hidden=pcfg.hidden, patience=pcfg.patience, seed=ecfg.seed,
        device=ecfg.device, progress=ecfg.progress, max_tokens=pcfg.max_tokens,
    )  # fmt: skip
    try:
        data = prepare_cohort(cohort, base, ctx)
        present = data.splits[TEST].present
        results: dict[str, dict[str, Any]] = {}
        preds: dict[str, Predictions] = {}
        skipped: dict[str, str] = {}
        for name, choice in (*BASELINE_ROWS, *ABLATION_ROWS):
            need = _UNIMODAL_NEEDS.get(choice.kind)
            if need is not None and not bool(data.splits["train"].present[:, need].any()):
                skipped[name] = f"no training admission has {need.name.lower()}"
                continue
            cfg = replace(base, model=choice.kind, ablation=choice.ablation)
            run_dir = out / "runs" / choice.name.replace("/", "-")
            model, _ = train_model(data, run_dir, cfg, ctx)
            val = predict_split(model, data.splits[VAL], ctx.device)
            test = predict_split(model, data.splits[TEST], ctx.device)
            preds[name] = test
            results[name] = evaluate_predictions(val, test, n_boot=ecfg.n_bootstrap, seed=ecfg.seed)
        moe = preds.get("MoE-Health")
        doc: dict[str, Any] = {
            "cohort": str(cohort),
            "test_admissions": int(present.shape[0]),
            "config": {
                "epochs": pcfg.epochs,
                "pretrain_epochs": pcfg.pretrain_epochs,
                "patience": pcfg.patience,
                "batch_size": pcfg.batch_size,
                "lr": pcfg.lr,
                "hidden": pcfg.hidden,
                "seed": ecfg.seed,
                "bootstrap": ecfg.n_bootstrap,
            },
            "scale": scale_note(pcfg),
            "table1": results,
            "table2": per_combination(moe, n_boot=ecfg.n_bootstrap, seed=ecfg.seed) if moe else {},
            "gates": gate_by_combination(moe) if moe else {},
            "skipped": skipped,
        }
        (out / "paper.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        text = _markdown(doc, moe)
        _plots(out, preds, doc, moe)
        (out / "paper.md").write_text(text)
        return text
    finally:
        shutdown(ctx)


PAPER_EPOCHS = 50  # section 4.3: at most 50 epochs with early stopping
TABLE2_NOTE = (
    "Table 2 is reported per test subgroup: the one MoE-Health model trained on all "
    "admissions, scored on the test admissions of each availability combination (not "
    "separate models retrained on modality subsets)."
)


def scale_note(pcfg: PaperConfig) -> str:
    """What kind of reproduction this is, with its training budget."""
    small = pcfg.epochs < PAPER_EPOCHS
    kind = "Small-scale reproduction" if small else "Reproduction"
    return (
        f"{kind}: each model trains at most {pcfg.epochs} epochs (paper: "
        f"{PAPER_EPOCHS}) after {pcfg.pretrain_epochs} expert pre-training epochs, "
        f"patience {pcfg.patience}, batch {pcfg.batch_size}, lr {pcfg.lr:g}, "
        f"d_h {pcfg.hidden}, on this cohort (not the paper's MIMIC-IV cohort); the "
        "figures are not the paper's and are not comparable with them."
    )


def _markdown(doc: dict[str, Any], moe: Predictions | None) -> str:
    t1 = doc["table1"]
    tasks = list(next(iter(t1.values()))) if t1 else []
    lines = ["# MoE-Health: paper tables on " + f"`{doc['cohort']}`", "",
             f"**{doc['scale']}**", "",
             f"Test admissions: {doc['test_admissions']}; epochs per model: "
             f"{doc['config']['epochs']}; d_h {doc['config']['hidden']}; bootstrap "
             f"{doc['config']['bootstrap']} resamples (95% CI).", "",
             "## Table 1: baselines (test AUROC | AUPRC | F1 per task)", "",
             "| model | " + " | ".join(f"{t} AUROC | {t} AUPRC | {t} F1" for t in tasks) + " |",
             "| --- |" + " --- |" * (3 * len(tasks))]  # fmt: skip
    for name, _ in BASELINE_ROWS:
        if name in t1:
            lines.append(_row(name, t1[name]))
    for name, why in doc["skipped"].items():
        lines.append(f"\n{name}: not trained ({why}).")
    lines += ["", "## Table 2: MoE-Health per availability combination (test AUROC / AUPRC)", "",
              TABLE2_NOTE, ""]  # fmt: skip
    lines += ["| combination | n | " + " | ".join(tasks) + " |",
              "| --- | --- |" + " --- |" * len(tasks)]  # fmt: skip
    for combo, entry in doc["table2"].items():
        cells = [f"{fmt_ci(entry[t]['auroc'])} / {fmt_ci(entry[t]['auprc'])}" for t in tasks]
        lines.append(f"| {combo} | {entry['n']} | " + " | ".join(cells) + " |")
    task = "mortality" if "mortality" in tasks else (tasks[0] if tasks else "")
    lines += ["", f"## Table 3: ablations (test AUROC, {task})", "",
              "| variant | AUROC | change vs full |", "| --- | --- | --- |"]  # fmt: skip
    full = t1.get("MoE-Health", {}).get(task, {}).get("metrics", {}).get("auroc", {})
    full_v = full.get("value") if full else None
    lines.append(f"| MoE-Health (full) | {fmt_ci(full)} | - |")
    for name, _ in ABLATION_ROWS:
        if name in t1:
            m = t1[name][task]["metrics"]["auroc"]
            v = m.get("value")
            delta = (v - full_v) if v is not None and full_v is not None else math.nan
            lines.append(f"| {name} | {fmt_ci(m)} | {delta:+.3f} |")
    if moe is not None:
        lines += ["", "![gate weights](gates.png)", "", "![calibration](reliability.png)"]
    lines += [""] + [f"![ROC {t}](roc_{t}.png)" for t in tasks]
    return "\n".join(lines) + "\n"


def _plots(out: Path, preds: dict[str, Predictions], doc: dict[str, Any],
           moe: Predictions | None) -> None:  # fmt: skip
    tasks = list(next(iter(preds.values())).tasks) if preds else []
    for task in tasks:
        curves = {}
        for name, _ in BASELINE_ROWS:
            if name in preds:
                y, p, _ = preds[name].task_arrays(task)
                curves[name] = (y, p)
        plot_roc(out / f"roc_{task}.png", curves, f"ROC, {task} (test)")
    if moe is not None:
        if doc["gates"]:
            plot_gate_heatmap(out / "gates.png", doc["gates"], moe.expert_names)
        rel = {t: r["reliability"] for t, r in doc["table1"]["MoE-Health"].items()}
        plot_reliability(out / "reliability.png", rel)
