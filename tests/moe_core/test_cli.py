"""``model-card`` and ``model-summary`` commands."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from moe_core.baselines import build_model
from moe_core.checkpoint import save_checkpoint
from moe_core.cli import register
from moe_core.feature_spec import NormStats
from moe_core.summary import generated_batch, model_summary

from .conftest import tiny_config


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
def checkpoint(tmp_path: Path, tiny_bert_dir: Path) -> Path:
    torch.manual_seed(0)
    model = build_model("moe", tiny_config(text_dir=tiny_bert_dir))
    stats = NormStats("v-test", (0.0,) * 3, (1.0,) * 3)
    return save_checkpoint(
        tmp_path / "ck",
        model,
        "v-test",
        stats,
        metrics={"test": {"mortality": {"auroc": 0.812}}},
        metadata={"name": "Demo model", "data": "synthetic cohort, 200 admissions"},
    )


def test_model_card_renders_checkpoint_facts(
    app: typer.Typer, checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "card.md"
    result = CliRunner().invoke(app, ["model-card", str(checkpoint), "--out", str(out)])
    assert result.exit_code == 0, result.output
    card = out.read_text()
    assert card.startswith("# Model card: Demo model")
    assert "Not for clinical use" in card  # synthetic training data is flagged
    assert "| test.mortality.auroc | 0.8120 |" in card
    assert "`v-test`" in card and "E+T+I" in card
    assert "initialised randomly" in card
    assert "## Intended use" in card and "## Limitations" in card


def test_model_card_on_a_non_checkpoint_folder_fails_clearly(
    app: typer.Typer, tmp_path: Path
) -> None:
    result = CliRunner().invoke(app, ["model-card", str(tmp_path)])
    assert result.exit_code == 2 and "config.json missing" in result.output


def test_model_summary_runs_a_forward_pass_on_a_checkpoint(
    app: typer.Typer, checkpoint: Path
) -> None:
    result = CliRunner().invoke(
        app, ["model-summary", "--checkpoint", str(checkpoint), "-b", "9", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert "experts (specialised)" in result.output
    assert "abstain (no modality)" in result.output
    assert result.output.count("\n") > 20


def test_generated_batch_cycles_patterns() -> None:
    model = build_model("moe", tiny_config())
    batch = generated_batch(model, 10)
    assert batch.present[:8].sum(1).tolist() == [3, 2, 2, 1, 2, 1, 1, 0]
    assert batch.text_emb is not None and batch.text_emb.shape == (10, 16)
    assert "total" in model_summary(model)
