"""``moe-health`` subcommands owned by the training package.

Thin typer commands only: every heavy import (torch, the generator, the training loop)
happens inside the command body so ``moe-health --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["register"]

_MODEL_HELP = (
    "Which model to train: 'moe' (MoE-Health), or a baseline: 'medfuse', 'early' (early "
    "fusion), 'joint' (joint fusion), 'late' (late fusion), 'unimodal-ehr', 'unimodal-text', "
    "'unimodal-image'."
)
_ABLATION_HELP = (
    "MoE-Health ablation (only with --model moe): 'zero-padding' (zeros instead of learned "
    "missing-modality embeddings), 'generic-experts' (experts not tied to a modality "
    "combination), 'uniform-gating' (equal gate weights), 'top-1' (route to one expert). "
    "Leave empty for the full model."
)


def synth(
    patients: int = typer.Option(
        100, "--patients", "-n", min=1, help="Number of synthetic patients to generate."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output folder for the FHIR NDJSON files (and DICOM files)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same files."),
    images: bool = typer.Option(
        True,
        "--images/--no-images",
        help="Write chest X-ray DICOM files and ImagingStudy resources. --no-images writes "
        "neither (no patient then has a chest X-ray; notes keep their 76.5% share).",
    ),
    gzip_output: bool = typer.Option(
        False, "--gzip/--no-gzip", help="Write .ndjson.gz instead of plain .ndjson."
    ),
    shard_size: int = typer.Option(
        100_000,
        "--shard-size",
        min=1,
        help="Patients per NDJSON shard; each resource type gets one file per shard, "
        "'<Type>.<shard:03d>.ndjson' (e.g. Patient.000.ndjson; more digits beyond 1,000 "
        "shards).",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Generate a clearly labelled synthetic cohort as FHIR R4 Bulk NDJSON (+ DICOM).

    Every patient is tagged 'synthetic' (Patient.meta.tag) and named 'Synthetic-...'.
    Availability follows the paper: EHR always, notes for 76.5%, chest X-ray for
    39.3%, all three for 37.4% (per admission). Outcomes (in-hospital mortality, stay
    > 7 days, 30-day readmission as a return Encounter with its own data) follow a
    documented logistic model of vitals/labs, note content and image content (see
    training/synth/outcomes.py).
    """
    from training.synth.generator import SynthConfig, write_cohort

    cfg = SynthConfig(
        n_patients=patients,
        seed=seed,
        images=images,
        gzip=gzip_output,
        shard_size=shard_size,
    )
    summary = write_cohort(cfg, out, progress=progress)
    typer.echo(summary.to_text())


def train(
    cohort: Path = typer.Option(..., "--cohort", help="Cohort folder written by build-cohort."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Run folder: checkpoints, metrics.csv/jsonl, final model."
    ),
    model: str = typer.Option("moe", "--model", help=_MODEL_HELP),
    ablation: str = typer.Option("", "--ablation", help=_ABLATION_HELP),
    tasks: str = typer.Option(
        "mortality,long_los,readmission",
        "--tasks",
        help="Comma-separated tasks to train (one task = single-task model): "
        "mortality, long_los, readmission.",
    ),
    epochs: int = typer.Option(50, "--epochs", min=1, help="Maximum joint-training epochs."),
    pretrain_epochs: int = typer.Option(
        5,
        "--pretrain-epochs",
        min=0,
        help="Expert pre-training epochs on each combination's own samples before joint "
        "training (paper section 3.2.2); 0 skips pre-training.",
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Mini-batch size."),
    lr: float = typer.Option(1e-4, "--lr", help="AdamW learning rate."),
    weight_decay: float = typer.Option(1e-2, "--weight-decay", help="AdamW weight decay."),
    alpha: float = typer.Option(0.01, "--alpha", help="Weight of the load-balancing loss."),
    top_k: int = typer.Option(2, "--top-k", min=1, help="Experts each sample is routed to."),
    hidden: int = typer.Option(128, "--hidden", min=4, help="Hidden width d_h of the model."),
    patience: int = typer.Option(
        5, "--patience", min=1, help="Early stopping: epochs without validation improvement."
    ),
    monitor: str = typer.Option(
        "auroc",
        "--monitor",
        help="Validation metric for early stopping: 'auroc' or 'auprc', averaged over the "
        "trained tasks that have both classes in the validation split.",
    ),
    fine_tune: bool = typer.Option(
        False,
        "--fine-tune/--frozen",
        help="--frozen (default): text and image encoders stay frozen and their embeddings "
        "are cached beside the cohort; --fine-tune trains them end to end.",
    ),
    text_encoder: Path | None = typer.Option(
        None,
        "--text-encoder",
        help="Local Hugging Face folder of the text encoder (default: the bundled "
        "all-MiniLM-L6-v2).",
    ),
    image_weights: Path | None = typer.Option(
        None,
        "--image-weights",
        help="Local DenseNet-121 state dict (default: random initialisation).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for initialisation, shuffling, dropout."),
    device: str = typer.Option("auto", "--device", help="'auto', 'cpu', 'cuda' or 'cuda:N'."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the last epoch checkpoint in --out."
    ),
    tensorboard: bool = typer.Option(
        False, "--tensorboard", help="Also log metrics for TensorBoard (if installed)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Train MoE-Health (or a baseline/ablation) on a cohort folder.

    Paper defaults: AdamW lr 1e-4, batch 32, up to 50 epochs with early stopping on
    the mean validation AUROC, alpha 0.01, top-2 routing, expert pre-training then
    joint training. Normalisation statistics are fitted on the training split only.
    Launch with 'torchrun --nproc_per_node N -m moe_health train ...' for DDP.
    """
    from training.train import TrainConfig, run_training

    cfg = TrainConfig(
        model=model,
        ablation=ablation or None,
        tasks=tuple(t.strip() for t in tasks.split(",") if t.strip()),
        epochs=epochs,
        pretrain_epochs=pretrain_epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        alpha=alpha,
        top_k=top_k,
        hidden=hidden,
        patience=patience,
        monitor=monitor,
        fine_tune=fine_tune,
        text_encoder=text_encoder,
        image_weights=image_weights,
        seed=seed,
        device=device,
        resume=resume,
        tensorboard=tensorboard,
        progress=progress,
    )
    result = run_training(cohort, out, cfg)
    typer.echo(result.to_text())


def evaluate(
    cohort: Path = typer.Option(..., "--cohort", help="Cohort folder written by build-cohort."),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="Trained model checkpoint to evaluate on the test split."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Folder for the report (Markdown, JSON, PNG plots)."
    ),
    paper: bool = typer.Option(
        False,
        "--paper",
        help="Reproduce the paper's tables at small scale (--epochs per model, default 10; "
        "the paper used up to 50): train every baseline (Table 1) and ablation (Table 3), "
        "report MoE-Health per availability combination of the test split (Table 2), "
        "then evaluate.",
    ),
    epochs: int = typer.Option(
        10, "--epochs", min=1, help="With --paper: maximum epochs for each model trained."
    ),
    bootstrap: int = typer.Option(
        1000, "--bootstrap", min=0, help="Bootstrap resamples for the 95% confidence intervals."
    ),
    pretrain_epochs: int = typer.Option(
        2, "--pretrain-epochs", min=0, help="With --paper: expert pre-training epochs."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for bootstrap resampling and training."),
    hidden: int = typer.Option(128, "--hidden", min=4, help="With --paper: hidden width d_h."),
    device: str = typer.Option("auto", "--device", help="'auto', 'cpu', 'cuda' or 'cuda:N'."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Evaluate a checkpoint (AUROC, AUPRC, F1, Brier, with bootstrap 95% CIs).

    The F1 threshold is chosen on the validation split and applied to the test split.
    With --paper, trains what it needs and writes Tables 1-3 as Markdown + JSON, ROC
    curves, reliability plots and gate-weight heat maps as PNG.
    """
    from training.evaluate import EvalConfig, run_evaluation, run_paper

    cfg = EvalConfig(n_bootstrap=bootstrap, seed=seed, device=device, progress=progress)
    if paper:
        if out is None:
            raise typer.BadParameter("--paper needs --out")
        from training.paper import PaperConfig, scale_note

        typer.echo(scale_note(PaperConfig(epochs=epochs, hidden=hidden,
                                          pretrain_epochs=pretrain_epochs)))  # fmt: skip
        text = run_paper(cohort, out, cfg, epochs=epochs, hidden=hidden,
                         pretrain_epochs=pretrain_epochs)  # fmt: skip
    else:
        if checkpoint is None:
            raise typer.BadParameter("give --checkpoint (or --paper)")
        text = run_evaluation(cohort, checkpoint, out, cfg)
    typer.echo(text)


def build_cohort(
    out: Path = typer.Option(
        ..., "--out", "-o", help="Cohort folder to write (Parquet + summary)."
    ),
    mimic_dir: Path | None = typer.Option(
        None,
        "--mimic-dir",
        help="MIMIC-IV folder (v2.2 or later; v1.0 layout tolerated) holding hosp/ and icu/ "
        "csv.gz files. Cohort: hospital admissions with an ICU stay, adults (age >= 18 at "
        "admission), alive and still in hospital at the prediction time.",
    ),
    notes_dir: Path | None = typer.Option(
        None,
        "--notes-dir",
        help="MIMIC-IV-Note folder (with note/ or the csv.gz files directly): radiology "
        "reports stored before the prediction time become notes; discharge summaries are "
        "never read.",
    ),
    cxr_dir: Path | None = typer.Option(
        None,
        "--cxr-dir",
        help="MIMIC-CXR-JPG folder: mimic-cxr-2.0.0-metadata.csv.gz + files/pXX/... jpgs. The "
        "first frontal (AP, else PA) image inside the window is used.",
    ),
    physionet2012: Path | None = typer.Option(
        None,
        "--physionet2012",
        help="PhysioNet/CinC 2012 folder with set-<x>.tar.gz (or set-<x>/ folders) and "
        "Outcomes-<x>.txt; read from the archives directly.",
    ),
    physionet_sets: str = typer.Option(
        "a", "--physionet-sets", help="Comma-separated PhysioNet 2012 sets to read: a, b, c."
    ),
    fhir_ndjson: Path | None = typer.Option(
        None,
        "--fhir-ndjson",
        help="A FHIR Bulk Data NDJSON export folder (Patient, Encounter, Observation, ...); "
        "labels come from Encounter (discharge, disposition) and Patient (deceased).",
    ),
    window_hours: int = typer.Option(
        48, "--window-hours", min=1, help="Observation window: prediction time = admission + N h."
    ),
    seed: int = typer.Option(
        0, "--seed", help="Seed of the 80/10/10 patient-level split (saved to splits.json)."
    ),
    memory_limit: str = typer.Option(
        "8GB",
        "--memory-limit",
        help="DuckDB memory cap for MIMIC-IV (e.g. '8GB'); larger intermediate results spill "
        "to --temp-dir. Full MIMIC-IV builds within 24 GiB.",
    ),
    temp_dir: Path | None = typer.Option(
        None, "--temp-dir", help="Folder for DuckDB spill files (default: the system temp)."
    ),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="DuckDB threads (default: all cores)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Build a cohort folder from MIMIC-IV, PhysioNet 2012 or a FHIR NDJSON export.

    Writes admissions/events/notes/images Parquet tables, splits.json (by patient,
    80/10/10, seeded) and summary.json/summary.md (counts per step, label rates,
    modality availability per combination), and prints the summary.
    """
    from training.build_cohort import BuildCohortRequest, run_build_cohort
    from training.cohort_report import print_cohort_summary

    try:
        req = BuildCohortRequest(
            out=out,
            mimic_dir=mimic_dir,
            notes_dir=notes_dir,
            cxr_dir=cxr_dir,
            physionet2012=physionet2012,
            physionet_sets=tuple(s.strip() for s in physionet_sets.split(",") if s.strip()),
            fhir_ndjson=fhir_ndjson,
            window_hours=window_hours,
            seed=seed,
            memory_limit=memory_limit,
            temp_dir=temp_dir,
            threads=threads,
            progress=progress,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    print_cohort_summary(run_build_cohort(req))
    typer.echo(f"cohort written to {out}")


def register(app: typer.Typer) -> None:
    """Add the training commands (``synth``, ``train``, ``evaluate``) to ``app``."""
    app.command("synth")(synth)
    app.command("build-cohort")(build_cohort)
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    from training.score.cli import score  # typer only; the scorer loads inside the command

    app.command("score")(score)
