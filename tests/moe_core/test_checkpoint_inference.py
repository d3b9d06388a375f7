"""Checkpoint round trips and the Predictor used by the CDS service and batch scorer."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from moe_core.baselines import build_model
from moe_core.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    SpecMismatchError,
    load_checkpoint,
    save_checkpoint,
)
from moe_core.config import ModelConfig
from moe_core.encoders.ehr import EHREncoderConfig
from moe_core.feature_spec import FeatureSpec, NormStats
from moe_core.features import RecordFeaturizer, category_cardinalities
from moe_core.inference import ABSTAIN_NO_MODALITY, Predictor
from moe_core.modalities import pattern_name
from moe_core.records import Labels, QualityNote

from .conftest import D_H, make_batch, make_record, tiny_config, tiny_spec


def _config(spec: FeatureSpec, text_dir: Path, **moe: object) -> ModelConfig:
    base = tiny_config(text_dir=text_dir, **moe)
    ehr = EHREncoderConfig(spec.n_features, category_cardinalities(spec), cat_dim=2, lstm_hidden=4)
    return replace(base, ehr=ehr)


@pytest.mark.parametrize(
    ("kind", "top_k"),
    [("moe", 1), ("moe", 2), ("medfuse", 2), ("early", 2), ("joint", 2), ("late", 2),
     ("unimodal-ehr", 2), ("unimodal-text", 2), ("unimodal-image", 2)],
)  # fmt: skip
def test_save_load_round_trip_reproduces_outputs_exactly(
    tmp_path: Path, tiny_bert_dir: Path, kind: str, top_k: int
) -> None:
    torch.manual_seed(0)
    cfg = tiny_config(text_dir=tiny_bert_dir, top_k=top_k)
    model = build_model(kind, cfg).eval()
    model.set_prior([0.2, 0.3, 0.4])
    stats = NormStats("v-test", (0.0,) * 3, (1.0,) * 3)
    save_checkpoint(
        tmp_path / "ck", model, spec_version="v-test", stats=stats, metrics={"auroc": 0.7}
    )
    loaded = load_checkpoint(tmp_path / "ck")
    for cached in (True, False) if kind == "moe" else (True,):
        batch = make_batch(cached=cached)
        a, b = model(batch), loaded.model(batch)
        assert torch.equal(a.logits, b.logits) and torch.equal(a.gate_probs, b.gate_probs)
        assert torch.equal(a.topk_idx, b.topk_idx)
        assert torch.equal(a.expert_weights, b.expert_weights)
        assert torch.equal(a.balance_loss, b.balance_loss)
    assert loaded.stats == stats and loaded.metrics == {"auroc": 0.7}
    assert loaded.model.config.moe.top_k == top_k and loaded.model.kind == model.kind


def test_modified_weights_file_is_refused(tmp_path: Path, tiny_bert_dir: Path) -> None:
    model = build_model("moe", tiny_config(text_dir=tiny_bert_dir))
    stats = NormStats("v-test", (0.0,) * 3, (1.0,) * 3)
    save_checkpoint(tmp_path, model, spec_version="v-test", stats=stats)
    load_checkpoint(tmp_path)  # intact: loads
    other = build_model("moe", tiny_config(text_dir=tiny_bert_dir))
    from safetensors.torch import save_file

    state = {
        k: v.contiguous()
        for k, v in other.state_dict().items()
        if not k.startswith("encoders.text.backbone.")
    }
    save_file(state, str(tmp_path / WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match="does not match the checksum"):
        load_checkpoint(tmp_path)


def test_stats_of_another_spec_are_refused(tmp_path: Path, tiny_bert_dir: Path) -> None:
    model = build_model("moe", tiny_config(text_dir=tiny_bert_dir))
    save_checkpoint(tmp_path, model, spec_version="v-test",
                    stats=NormStats("v-test", (0.0,) * 3, (1.0,) * 3))  # fmt: skip
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    meta["norm_stats"]["spec_version"] = "v-old"
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(SpecMismatchError, match="'v-old'"):
        load_checkpoint(tmp_path)


def test_checkpoint_records_what_serving_needs(tmp_path: Path, tiny_bert_dir: Path) -> None:
    model = build_model("moe", tiny_config(text_dir=tiny_bert_dir))
    stats = NormStats("v-test", (0.0,) * 3, (1.0,) * 3)
    save_checkpoint(
        tmp_path, model, spec_version="v-test", stats=stats, metadata={"data": "synthetic"}
    )
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert meta["spec_version"] == "v-test" and meta["kind"] == "moe"
    assert meta["expert_names"][0] == pattern_name((True, True, True))
    assert len(meta["combinations"]) == 7 and meta["package_version"] == "0.1.0"
    assert meta["text_encoder"]["path"] == str(tiny_bert_dir)
    assert meta["training"] == {"data": "synthetic"}
    from safetensors.torch import load_file

    keys = load_file(str(tmp_path / WEIGHTS_FILE)).keys()
    assert not any(k.startswith("encoders.text.backbone.") for k in keys)  # frozen, on disk
    assert any(k.startswith("encoders.image.backbone.") for k in keys)  # random init: saved


def test_mismatched_spec_version_is_refused(tmp_path: Path, tiny_bert_dir: Path) -> None:
    spec = tiny_spec("spec-A")
    model = build_model("moe", _config(spec, tiny_bert_dir))
    save_checkpoint(tmp_path, model, spec_version="spec-A", stats=NormStats.identity(spec))
    with pytest.raises(SpecMismatchError, match=r"'spec-A'.*'spec-B'"):
        load_checkpoint(tmp_path, spec=tiny_spec("spec-B"))
    assert load_checkpoint(tmp_path, spec=spec).spec_version == "spec-A"


def test_folder_without_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"config\.json missing"):
        load_checkpoint(tmp_path)


def test_predictor_end_to_end_from_records(tmp_path: Path, tiny_bert_dir: Path) -> None:
    spec = tiny_spec()
    stats = NormStats(spec.version, (80.0, 100.0), (10.0, 20.0))
    torch.manual_seed(0)
    model = build_model("moe", _config(spec, tiny_bert_dir))
    save_checkpoint(tmp_path, model, spec_version=spec.version, stats=stats)
    predictor = Predictor.from_checkpoint(tmp_path, spec=spec, device="cpu", batch_size=2)
    recs = [
        make_record("full"),
        make_record("ehr-only", text=False, image=False),
        make_record("text-only", ehr=False, image=False),
        make_record("nothing", ehr=False, text=False, image=False, labels=Labels()),
        make_record("short", hours=6, image=False),
    ]
    recs[1].quality.append(QualityNote("Observation/x", "bad unit", "mmol"))
    preds = predictor.predict(recs)
    assert [p.encounter_id for p in preds] == ["full", "ehr-only", "text-only", "nothing", "short"]
    full = preds[0]
    assert full.risks is not None and set(full.risks) == {"mortality", "long_los", "readmission"}
    assert all(0.0 < r < 1.0 for r in full.risks.values())
    assert set(full.gate_weights) == set(model.config.moe.expert_names())
    assert sum(full.gate_weights.values()) == pytest.approx(1.0, abs=1e-5)
    assert len(full.top_experts) == 2
    assert sum(full.routing_weights.values()) == pytest.approx(1.0, abs=1e-5)
    assert full.modalities_used == ["ehr", "text", "image"] and full.modalities_missing == []
    assert preds[1].modalities_missing == ["text", "image"]
    assert [q.reason for q in preds[1].quality] == ["bad unit"]
    assert preds[3].risks is None and preds[3].abstain_reason == ABSTAIN_NO_MODALITY
    assert preds[4].hours_covered == pytest.approx(6.0) and preds[0].hours_covered == 48.0
    # same risks as the model on the featurised batch directly
    batch = RecordFeaturizer(spec, stats, tokenizer=predictor.tokenizer)(recs[:1])
    direct = predictor.model(batch).probs[0, 0].item()
    assert full.risks["mortality"] == pytest.approx(direct, abs=1e-6)


def test_predictor_cache_hooks_are_filled_and_reused(tmp_path: Path, tiny_bert_dir: Path) -> None:
    spec = tiny_spec()
    stats = NormStats.identity(spec)
    torch.manual_seed(0)
    model = build_model("moe", _config(spec, tiny_bert_dir))
    save_checkpoint(tmp_path, model, spec_version=spec.version, stats=stats)
    plain = Predictor.from_checkpoint(tmp_path, spec=spec, device="cpu")
    text_cache: dict[str, torch.Tensor] = {}
    image_cache: dict[str, torch.Tensor] = {}
    cached = Predictor.from_checkpoint(
        tmp_path, spec=spec, device="cpu", text_cache=text_cache, image_cache=image_cache
    )
    recs = [make_record("a"), make_record("b", image=False)]
    first = cached.predict(recs)
    assert len(text_cache) == 2 and len(image_cache) == 1
    again = cached.predict(recs)
    reference = plain.predict(recs)
    for x, y, z in zip(first, again, reference, strict=True):
        assert x.risks == y.risks
        assert x.risks is not None and z.risks is not None
        for task in x.risks:
            assert x.risks[task] == pytest.approx(z.risks[task], abs=1e-5)
    assert model.config.d_h == D_H
