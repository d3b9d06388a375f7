"""The shipped demo checkpoint (cds_hooks/model/demo) saw every modality combination."""

from __future__ import annotations

import json
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "cds_hooks" / "model" / "demo"


def test_demo_model_has_an_expert_per_synthetic_combination() -> None:
    meta = json.loads((DEMO / "config.json").read_text())
    assert {"E", "E+T", "E+I", "E+T+I"} <= set(meta["expert_names"])
    training = meta["training"]
    assert training["image_cache"] and training["text_cache"]  # trained on X-rays and notes


def test_model_card_quotes_the_shipped_validation_aurocs() -> None:
    meta = json.loads((DEMO / "config.json").read_text())
    card = (DEMO / "MODEL_CARD.md").read_text()
    readme = (DEMO.parent / "README.md").read_text()
    for value in meta["training"]["val"].values():
        assert f"{value:.3f}" in card and f"{value:.3f}" in readme
    assert f"best epoch {meta['training']['best_epoch']}" in card


def test_demo_model_loads_with_the_running_spec_and_records_its_window() -> None:
    from moe_core.checkpoint import load_checkpoint
    from moe_core.feature_catalog import DEFAULT_SPEC

    loaded = load_checkpoint(DEMO, spec=DEFAULT_SPEC, load_text_backbone=False)
    assert loaded.spec_version == DEFAULT_SPEC.version
    assert loaded.meta["training"]["window_hours"] == 48
