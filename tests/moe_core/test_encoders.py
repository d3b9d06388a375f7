"""Encoder shape tables, frozen backbones, cached embeddings and weight loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import densenet121

from moe_core.encoders.ehr import EHREncoder, EHREncoderConfig, carry_forward
from moe_core.encoders.image import (
    DENSENET_FEATURES,
    ImageEncoder,
    ImageEncoderConfig,
    load_densenet_state_dict,
)
from moe_core.encoders.stack import ModalityEncoders
from moe_core.encoders.text import TextEncoder, TextEncoderConfig, default_text_encoder_path
from moe_core.features import WINDOW_HOURS

from .conftest import D_H, TEXT_DIM, make_batch, tiny_config


@pytest.mark.parametrize(("b", "f", "cards"), [(1, 1, (1,)), (4, 3, (3, 5)), (2, 7, (2, 2, 2, 2))])
def test_ehr_encoder_shapes(b: int, f: int, cards: tuple[int, ...]) -> None:
    enc = EHREncoder(EHREncoderConfig(f, cards, cat_dim=2, lstm_hidden=4), d_h=D_H)
    out = enc(
        torch.randn(b, 1),
        torch.ones(b, 1),
        torch.zeros(b, len(cards), dtype=torch.long),
        torch.randn(b, WINDOW_HOURS, f),
        torch.ones(b, WINDOW_HOURS, f),
    )
    assert out.shape == (b, D_H)


def test_ehr_encoder_sees_the_mask() -> None:
    torch.manual_seed(0)
    enc = EHREncoder(EHREncoderConfig(2, (3,), cat_dim=2, lstm_hidden=4), d_h=D_H).eval()
    args = (torch.zeros(1, 1), torch.ones(1, 1), torch.zeros(1, 1, dtype=torch.long))
    vals = torch.zeros(1, WINDOW_HOURS, 2)
    measured_zero = enc(*args, vals, torch.ones_like(vals))
    unobserved = enc(*args, vals, torch.zeros_like(vals))
    assert not torch.allclose(measured_zero, unobserved)


def test_carry_forward_by_hand() -> None:
    # one feature over 5 hours: observed 2.0 at hour 1 and 3.0 at hour 3
    values = torch.tensor([0.0, 2.0, 0.0, 3.0, 0.0]).view(1, 5, 1)
    mask = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0]).view(1, 5, 1)
    carried, elapsed = carry_forward(values, mask)
    assert carried.flatten().tolist() == [0.0, 2.0, 2.0, 3.0, 3.0]
    assert elapsed.flatten().tolist() == pytest.approx([1.0, 0.0, 0.2, 0.0, 0.2])


@pytest.mark.parametrize("sequence_input", ["values", "carried"])
def test_ehr_encoder_sequence_inputs(sequence_input: str) -> None:
    cfg = EHREncoderConfig(3, (3,), cat_dim=2, lstm_hidden=4, sequence_input=sequence_input)
    enc = EHREncoder(cfg, d_h=D_H)
    assert enc.lstm.input_size == (2 if sequence_input == "values" else 4) * 3
    mask = (torch.rand(2, WINDOW_HOURS, 3) < 0.2).float()
    out = enc(torch.zeros(2, 1), torch.ones(2, 1), torch.zeros(2, 1, dtype=torch.long),
              torch.randn(2, WINDOW_HOURS, 3) * mask, mask)  # fmt: skip
    assert out.shape == (2, D_H)
    with pytest.raises(ValueError, match="sequence_input"):
        EHREncoderConfig(3, (3,), sequence_input="mean")


def test_ehr_encoder_rejects_wrong_feature_count() -> None:
    enc = EHREncoder(EHREncoderConfig(3, (3,)), d_h=D_H)
    with pytest.raises(ValueError, match="feature spec mismatch"):
        enc(
            torch.zeros(1, 1),
            torch.ones(1, 1),
            torch.zeros(1, 1, dtype=torch.long),
            torch.zeros(1, WINDOW_HOURS, 2),
            torch.zeros(1, WINDOW_HOURS, 2),
        )


@pytest.mark.parametrize(("pooling", "b", "length"), [("cls", 1, 5), ("cls", 3, 9), ("mean", 2, 7)])
def test_text_encoder_shapes(tiny_bert_dir: Path, pooling: str, b: int, length: int) -> None:
    enc = TextEncoder(TextEncoderConfig(path=str(tiny_bert_dir), pooling=pooling), d_h=D_H)
    ids = torch.randint(1000, 2000, (b, length))
    mask = torch.ones(b, length, dtype=torch.long)
    assert enc.embed(ids, mask).shape == (b, TEXT_DIM)
    assert enc(ids=ids, mask=mask).shape == (b, D_H)
    assert enc(cached=torch.randn(b, TEXT_DIM)).shape == (b, D_H)


def test_mean_pooling_ignores_padding(tiny_bert_dir: Path) -> None:
    enc = TextEncoder(TextEncoderConfig(path=str(tiny_bert_dir), pooling="mean"), d_h=D_H)
    ids = torch.tensor([[101, 1500, 102, 0, 0]])
    short = enc.embed(ids[:, :3], torch.ones(1, 3, dtype=torch.long))
    padded = enc.embed(ids, torch.tensor([[1, 1, 1, 0, 0]]))
    assert torch.allclose(short, padded, atol=1e-5)


def test_frozen_text_backbone_gets_no_gradient(tiny_bert_dir: Path) -> None:
    enc = TextEncoder(TextEncoderConfig(path=str(tiny_bert_dir)), d_h=D_H)
    ids = torch.randint(1000, 2000, (2, 4))
    enc(ids=ids, mask=torch.ones_like(ids)).sum().backward()
    assert all(p.grad is None for p in enc.backbone.parameters())  # type: ignore[union-attr]
    assert enc.proj.weight.grad is not None


def test_cached_text_embedding_equals_live_encoding(tiny_bert_dir: Path) -> None:
    enc = TextEncoder(TextEncoderConfig(path=str(tiny_bert_dir)), d_h=D_H)
    ids = torch.randint(1000, 2000, (2, 4))
    mask = torch.ones_like(ids)
    assert torch.equal(enc(ids=ids, mask=mask), enc(cached=enc.embed(ids, mask)))


def test_text_encoder_without_backbone_needs_cached_input(tiny_bert_dir: Path) -> None:
    enc = TextEncoder(TextEncoderConfig(path=str(tiny_bert_dir), load_backbone=False), d_h=D_H)
    assert enc.input_dim == TEXT_DIM  # read from config.json, weights not loaded
    with pytest.raises(ValueError, match="cached"):
        enc(ids=torch.ones(1, 3, dtype=torch.long), mask=torch.ones(1, 3, dtype=torch.long))


def test_real_default_text_encoder_loads_offline() -> None:
    path = default_text_encoder_path()
    assert path.name == "model" and (path / "model.safetensors").is_file()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    enc = TextEncoder(TextEncoderConfig(), d_h=D_H)
    t = tok(["chest pain, troponin elevated", "stable"], padding=True, return_tensors="pt")
    pooled = enc.embed(t["input_ids"], t["attention_mask"])
    assert pooled.shape == (2, 384) and torch.isfinite(pooled).all()


@pytest.mark.parametrize(("b", "size"), [(2, 32), (1, 224)])
def test_image_encoder_shapes(b: int, size: int) -> None:
    enc = ImageEncoder(ImageEncoderConfig(), d_h=D_H)
    x = torch.randn(b, 3, size, size)
    assert enc.embed(x).shape == (b, DENSENET_FEATURES)
    assert enc(image=x).shape == (b, D_H)
    assert enc(cached=torch.randn(b, DENSENET_FEATURES)).shape == (b, D_H)


@pytest.mark.parametrize("prefix", ["", "module.", "densenet121.", "module.densenet121."])
def test_chexpert_style_state_dict_loads(tmp_path: Path, prefix: str) -> None:
    torch.manual_seed(1)
    src = densenet121(weights=None, num_classes=14)
    state = {f"{prefix}{k}": v for k, v in src.state_dict().items()}  # features.* + classifier.*
    path = tmp_path / "chexpert.pth"
    torch.save({"state_dict": state}, path)
    enc = ImageEncoder(ImageEncoderConfig(state_dict_path=str(path)), d_h=D_H)
    w = "denseblock1.denselayer1.conv1.weight"
    assert torch.equal(enc.backbone.state_dict()[w], src.features.state_dict()[w])


def test_legacy_dotted_densenet_keys_load() -> None:
    src = densenet121(weights=None).features
    legacy = {
        k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v
        for k, v in src.state_dict().items()
    }
    target = densenet121(weights=None).features
    load_densenet_state_dict(target, legacy)
    k = "denseblock2.denselayer3.norm1.weight"
    assert torch.equal(target.state_dict()[k], src.state_dict()[k])


def test_mismatched_state_dict_names_the_keys() -> None:
    bad = {"features.conv0.weight": torch.zeros(3, 3, 3, 3), "resnet.fc.weight": torch.zeros(2)}
    with pytest.raises(ValueError, match="missing keys") as err:
        load_densenet_state_dict(densenet121(weights=None).features, bad)
    assert "resnet.fc.weight" in str(err.value) and "conv0.weight" in str(err.value)


def test_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        ImageEncoder(ImageEncoderConfig(state_dict_path=str(tmp_path / "nope.pth")), d_h=D_H)


@pytest.mark.parametrize("cached", [True, False])
def test_stack_encodes_only_present_rows(tiny_bert_dir: Path, cached: bool) -> None:
    cfg = tiny_config(text_dir=tiny_bert_dir)
    encs = ModalityEncoders(cfg.d_h, cfg.ehr, cfg.text, cfg.image).eval()
    batch = make_batch(cached=cached)
    emb = encs(batch)  # (B, M, d_h)
    assert emb.shape == (batch.size, 3, D_H)
    absent = ~batch.present
    assert emb[absent].abs().sum() == 0 and (emb[batch.present].abs().sum(-1) > 0).all()


def test_text_present_without_text_input_is_a_clear_error() -> None:
    cfg = tiny_config()
    encs = ModalityEncoders(cfg.d_h, cfg.ehr, cfg.text, cfg.image)
    batch = make_batch()
    batch.text_emb = None
    with pytest.raises(ValueError, match="text as present"):
        encs(batch)
