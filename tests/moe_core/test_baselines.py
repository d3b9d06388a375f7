"""Baselines share the model contract: shapes, availability handling, fusion rules."""

from __future__ import annotations

import pytest
import torch

from moe_core.baselines import MODEL_KINDS, EarlyFusion, LateFusion, MedFuse, build_model
from moe_core.config import ModelConfig
from moe_core.losses import total_loss

from .conftest import ALL_ROWS, make_batch, tiny_config

KINDS = [
    "moe",
    "medfuse",
    "early",
    "joint",
    "late",
    "unimodal-ehr",
    "unimodal-text",
    "unimodal-image",
]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_gives_a_typed_output_for_all_patterns(kind: str) -> None:
    torch.manual_seed(0)
    model = build_model(kind, tiny_config()).eval()
    batch = make_batch()
    out = model(batch)
    assert out.logits.shape == (len(ALL_ROWS), 3)
    assert torch.isfinite(out.probs).all()
    assert bool(out.abstain[-1])  # the all-missing row
    total, _ = total_loss(out, batch, [0, 1, 2])
    total.backward()  # every kind trains through the same loss


@pytest.mark.parametrize(
    ("kind", "col"), [("unimodal-ehr", 0), ("unimodal-text", 1), ("unimodal-image", 2)]
)
def test_unimodal_abstains_without_its_modality(kind: str, col: int) -> None:
    out = build_model(kind, tiny_config()).eval()(make_batch())
    expected = [not row[col] for row in ALL_ROWS]
    assert out.abstain.tolist() == expected


def test_unknown_kind_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="medfuse"):
        build_model("transformer", tiny_config())
    assert set(MODEL_KINDS) == {"moe", "medfuse", "early", "joint", "late", "unimodal"}


def test_medfuse_skips_missing_modalities_instead_of_padding() -> None:
    torch.manual_seed(0)
    model = MedFuse(tiny_config()).eval()
    batch = make_batch([(True, False, True)])
    out = model(batch)
    # the same sequence read by hand: [v_ehr, v_image], no slot for the absent notes
    emb = model.encoders(batch)[0]  # (M, d_h)
    _, (h, _) = model.lstm(torch.stack([emb[0], emb[2]]).unsqueeze(0))
    assert torch.allclose(out.logits[0], model.classifier(h[-1])[0], atol=1e-6)


def test_late_fusion_averages_available_modality_probabilities() -> None:
    torch.manual_seed(0)
    model = LateFusion(tiny_config()).eval()
    batch = make_batch([(True, False, True)])
    emb = model.encoders(batch)[0]
    p_ehr = torch.sigmoid(model.heads[0](emb[0]))
    p_img = torch.sigmoid(model.heads[2](emb[2]))
    assert torch.allclose(model(batch).probs[0], (p_ehr + p_img) / 2, atol=1e-5)


def test_early_fusion_trains_no_modality_encoder() -> None:
    model = EarlyFusion(tiny_config())
    batch = make_batch()
    total, _ = total_loss(model(batch), batch, [0, 1, 2])
    total.backward()
    assert all(p.grad is None for p in model.encoders.parameters())
    assert any(p.grad is not None for p in model.mlp.parameters())


def test_joint_fusion_trains_the_encoders() -> None:
    model = build_model("joint", tiny_config())
    batch = make_batch()
    total, _ = total_loss(model(batch), batch, [0, 1, 2])
    total.backward()
    assert model.encoders.ehr.proj.weight.grad is not None


def test_unimodal_kind_disagreeing_with_config_is_refused() -> None:
    cfg = tiny_config()
    cfg = ModelConfig(ehr=cfg.ehr, d_h=cfg.d_h, text=cfg.text, moe=cfg.moe, unimodal="text")
    with pytest.raises(ValueError, match="disagrees"):
        build_model("unimodal-image", cfg)
