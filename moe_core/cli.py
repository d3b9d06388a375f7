"""``moe-health`` subcommands owned by the model core: ``model-card``, ``model-summary``.

Thin typer commands; torch and the model are imported inside the command bodies.
"""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["register"]


def model_card(
    checkpoint: Path = typer.Argument(
        ...,
        exists=True,
        file_okay=False,
        help="Checkpoint folder (holds config.json and model.safetensors).",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write the Markdown card to this file instead of stdout."
    ),
    title: str | None = typer.Option(
        None,
        "--title",
        help="Card title; default: the training metadata's 'name', else the model kind.",
    ),
) -> None:
    """Render a Markdown model card from a checkpoint (architecture, experts, encoders,
    training data and metrics recorded at save time, intended use, limitations).

    The card is printed, or written to --out.
    """
    from moe_core.checkpoint import CheckpointError, read_checkpoint_meta
    from moe_core.model_card import render_model_card

    try:
        meta = read_checkpoint_meta(checkpoint)
    except CheckpointError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    card = render_model_card(meta, title=title)
    if out is None:
        typer.echo(card)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(card, encoding="utf-8")
        typer.echo(f"model card written to {out}")


def model_summary(
    checkpoint: Path | None = typer.Option(
        None,
        "--checkpoint",
        "-c",
        exists=True,
        file_okay=False,
        help="Checkpoint folder to summarise. Default: a fresh, untrained MoE-Health model "
        "built for the default feature spec.",
    ),
    batch_size: int = typer.Option(
        8,
        "--batch-size",
        "-b",
        min=1,
        help="Rows in the generated batch; rows cycle through the 7 availability patterns "
        "and an all-missing row.",
    ),
    raw: bool = typer.Option(
        False,
        "--raw/--cached",
        help="--raw runs the full text and image encoders on generated tokens and 224x224 "
        "images (loads the local text encoder); --cached (default) feeds generated "
        "pooled embeddings and skips the backbones.",
    ),
    d_h: int = typer.Option(
        256,
        "--d-h",
        min=1,
        help="Shared embedding width of a fresh model (ignored with --checkpoint).",
    ),
    device: str = typer.Option(
        "auto", "--device", help="'auto' (CUDA if present, else CPU), 'cpu' or 'cuda[:N]'."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for the fresh model and the batch."),
) -> None:
    """Print the model summary and run one forward pass on a generated batch."""
    import time

    import torch

    from moe_core.device import autocast_for, resolve_device
    from moe_core.modalities import pattern_name
    from moe_core.summary import generated_batch, model_summary

    dev = resolve_device(device)
    torch.manual_seed(seed)
    if checkpoint is not None:
        from moe_core.checkpoint import load_checkpoint

        model = load_checkpoint(checkpoint, device=dev, load_text_backbone=raw).model
    else:
        from moe_core.baselines import build_model
        from moe_core.config import ModelConfig
        from moe_core.encoders.ehr import EHREncoderConfig
        from moe_core.encoders.text import TextEncoderConfig
        from moe_core.feature_catalog import DEFAULT_SPEC
        from moe_core.features import category_cardinalities

        cfg = ModelConfig(
            ehr=EHREncoderConfig(DEFAULT_SPEC.n_features, category_cardinalities(DEFAULT_SPEC)),
            d_h=d_h,
            text=TextEncoderConfig(load_backbone=raw),
        )
        model = build_model("moe", cfg).to(dev)
    model.eval()
    typer.echo(model_summary(model))
    batch = generated_batch(model, batch_size, raw=raw, seed=seed).to(dev)
    start = time.perf_counter()
    with torch.inference_mode(), autocast_for(dev):
        out = model(batch)
    ms = (time.perf_counter() - start) * 1000
    typer.echo(
        f"\nforward pass on {batch_size} generated rows ({dev}, "
        f"{'raw inputs' if raw else 'cached embeddings'}): {ms:.1f} ms"
    )
    names = out.expert_names
    typer.echo(
        f"{'row':<5}{'pattern':<9}" + "".join(f"{t:>13}" for t in out.tasks) + "  top experts"
    )
    for i in range(batch.size):
        pattern = pattern_name(out.present[i].tolist())
        risks = "".join(f"{float(p):>13.3f}" for p in out.probs[i])
        if bool(out.abstain[i]):
            top = "abstain (no modality)"
        elif names:
            top = ", ".join(
                f"{names[int(j)]} {float(w):.2f}"
                for j, w in zip(out.topk_idx[i], out.topk_weights[i], strict=True)
            )
        else:
            top = "-"
        typer.echo(f"{i:<5}{pattern:<9}{risks}  {top}")


def register(app: typer.Typer) -> None:
    """Add ``model-card`` and ``model-summary`` to the ``moe-health`` app."""
    app.command("model-card")(model_card)
    app.command("model-summary")(model_summary)
