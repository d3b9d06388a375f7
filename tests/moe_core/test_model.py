"""MoE-Health: availability patterns, abstention, gradients, routing, losses, ablations."""

from __future__ import annotations

import pytest
import torch

from moe_core.config import ModelConfig, MoEConfig
from moe_core.fusion import route_top_k
from moe_core.losses import load_balance_loss, masked_bce, total_loss
from moe_core.modalities import AVAILABILITY_PATTERNS, Modality, pattern_name
from moe_core.model import MoEHealth, combination_sample_masks, expert_pretraining_loss

from .conftest import ALL_ROWS, D_H, make_batch, tiny_config


def _model(**moe: object) -> MoEHealth:
    torch.manual_seed(0)
    return MoEHealth(tiny_config(**moe)).eval()


def test_all_seven_patterns_and_all_missing_in_one_batch() -> None:
    model = _model()
    batch = make_batch()
    out = model(batch)
    b = len(ALL_ROWS)
    assert out.logits.shape == (b, 3) and out.probs.shape == (b, 3)
    assert out.gate_probs.shape == (b, 7) and out.topk_idx.shape == (b, 2)
    assert torch.isfinite(out.probs).all() and torch.isfinite(out.logits).all()
    assert out.abstain.tolist() == [False] * 7 + [True]
    assert out.expert_names == [pattern_name(c) for c in AVAILABILITY_PATTERNS]
    assert out.balance_loss.ndim == 0 and out.balance_loss.item() > 0


def test_single_modality_patients_get_distinct_predictions() -> None:
    out = _model()(make_batch([(True, False, False), (False, True, False), (False, False, True)]))
    assert len({tuple(r) for r in out.logits.tolist()}) == 3


def test_all_missing_sample_abstains_with_prior() -> None:
    model = _model()
    model.set_prior([0.1, 0.3, 0.2])
    out = model(make_batch([(False, False, False), (True, True, True)]))
    assert out.abstain.tolist() == [True, False]
    assert out.probs[0].tolist() == pytest.approx([0.1, 0.3, 0.2], abs=1e-6)
    assert out.gate_probs[0].abs().sum() == 0 and out.expert_weights[0].abs().sum() == 0
    # abstained rows carry no loss: the loss equals the loss of the other row alone
    assert out.topk_idx[0].tolist() == [-1] * out.topk_idx.shape[1]
    batch = make_batch([(False, False, False), (True, True, True)])
    full, _ = total_loss(out, batch, [0, 1, 2])
    alone_batch = batch.select(torch.tensor([1]))
    alone, _ = total_loss(model(alone_batch), alone_batch, [0, 1, 2])
    assert full.item() == pytest.approx(alone.item(), rel=1e-5)


def test_gradients_reach_missing_embeddings_only_from_absent_samples() -> None:
    model = _model()
    batch = make_batch([(True, True, True), (True, False, True), (False, True, False)])
    emb = model.missing.embeddings
    assert emb is not None
    model(batch).logits[0].sum().backward()  # all present: no missing embedding used
    assert emb.grad is None or emb.grad.abs().sum() == 0
    model.zero_grad()
    model(batch).logits[1].sum().backward()  # text absent only
    assert emb.grad is not None
    assert emb.grad[Modality.TEXT].abs().sum() > 0
    assert emb.grad[Modality.EHR].abs().sum() == 0 and emb.grad[Modality.IMAGE].abs().sum() == 0
    model.zero_grad()
    model(batch).logits[2].sum().backward()  # EHR and image absent
    assert emb.grad[Modality.TEXT].abs().sum() == 0
    assert emb.grad[Modality.EHR].abs().sum() > 0 and emb.grad[Modality.IMAGE].abs().sum() > 0


def test_topk_weights_sum_to_one_and_unselected_are_exactly_zero() -> None:
    out = _model()(make_batch())
    live = ~out.abstain
    assert torch.allclose(out.topk_weights[live].sum(-1), torch.ones(int(live.sum())))
    assert torch.allclose(out.expert_weights[live].sum(-1), torch.ones(int(live.sum())))
    assert ((out.expert_weights[live] != 0).sum(-1) == 2).all()
    for i in range(int(live.sum())):
        unselected = [j for j in range(7) if j not in out.topk_idx[i].tolist()]
        assert (out.expert_weights[i, unselected] == 0).all()


def test_route_top_k_on_a_known_gate() -> None:
    g = torch.tensor([[0.1, 0.6, 0.3]])
    idx, w, dense = route_top_k(g, 2)
    assert idx.tolist() == [[1, 2]]
    assert w.tolist()[0] == pytest.approx([2 / 3, 1 / 3])
    assert dense.tolist()[0] == pytest.approx([0.0, 2 / 3, 1 / 3])


def test_balance_loss_equals_hand_computed_value() -> None:
    g = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3]], requires_grad=True)
    idx = torch.tensor([[0, 1], [1, 2]])
    # f = [1, 2, 1]; p = [0.35, 0.4, 0.25]; f*p = [0.35, 0.8, 0.25]
    fp = [0.35, 0.8, 0.25]
    mean = sum(fp) / 3
    std = (sum((x - mean) ** 2 for x in fp) / 3) ** 0.5
    loss = load_balance_loss(g, idx, alpha=0.01)
    assert loss.item() == pytest.approx(0.01 * std / mean, rel=1e-6)
    loss.backward()  # gradient flows through p only
    assert g.grad is not None and g.grad.abs().sum() > 0


def test_balance_loss_is_zero_for_perfect_balance() -> None:
    g = torch.full((2, 2), 0.5)
    assert load_balance_loss(g, torch.tensor([[0], [1]]), 0.01).item() == pytest.approx(0.0)


def test_masked_bce_ignores_unknown_labels() -> None:
    logits = torch.tensor([[0.0, 100.0]])
    labels = torch.tensor([[1.0, 0.0]])
    loss = masked_bce(logits, labels, torch.tensor([[True, False]]))
    assert loss.item() == pytest.approx(torch.log(torch.tensor(2.0)).item())


def test_single_task_model_predicts_one_task() -> None:
    cfg = tiny_config()
    cfg = ModelConfig(ehr=cfg.ehr, d_h=D_H, text=cfg.text, moe=cfg.moe, tasks=("long_los",))
    model = MoEHealth(cfg).eval()
    batch = make_batch()
    out = model(batch)
    assert out.logits.shape == (len(ALL_ROWS), 1) and out.tasks == ("long_los",)
    total, task = total_loss(out, batch, cfg.task_columns)
    assert cfg.task_columns == [1] and torch.isfinite(total) and total >= task


# ---------------------------------------------------------------- ablations


def test_zero_padding_ablation_has_no_missing_parameters_and_zero_rows() -> None:
    model = _model(missing="zero")
    assert model.missing.embeddings is None
    assert not any("missing" in n for n, _ in model.named_parameters())
    r = model.representation(make_batch([(True, False, False)]))
    assert r[0, D_H:].abs().sum() == 0 and r[0, :D_H].abs().sum() > 0
    learned = _model().representation(make_batch([(True, False, False)]))
    assert learned[0, D_H:].abs().sum() > 0


def test_generic_experts_ablation_refuses_pretraining_and_has_own_count() -> None:
    model = _model(experts="generic", n_generic_experts=4)
    out = model(make_batch())
    assert out.expert_names == ["G1", "G2", "G3", "G4"] and out.gate_probs.shape[1] == 4
    with pytest.raises(ValueError, match="generic"):
        combination_sample_masks(model, make_batch().present)


def test_uniform_gating_ablation_has_no_gate_and_averages_all_experts() -> None:
    model = _model(gating="uniform")
    assert model.gate is None
    assert not any(n.startswith("gate.") for n, _ in model.named_parameters())
    out = model(make_batch())
    live = ~out.abstain
    assert torch.allclose(out.expert_weights[live], torch.full((int(live.sum()), 7), 1 / 7))
    assert out.balance_loss.item() == 0.0


def test_top1_ablation_routes_to_one_expert_and_changes_outputs() -> None:
    top2 = _model()
    top1 = MoEHealth(tiny_config(top_k=1)).eval()
    top1.load_state_dict(top2.state_dict())  # same weights, different routing
    batch = make_batch()
    o1, o2 = top1(batch), top2(batch)
    live = ~o1.abstain
    assert ((o1.expert_weights[live] != 0).sum(-1) == 1).all()
    assert not torch.allclose(o1.logits[live], o2.logits[live])


# ---------------------------------------------------------------- pre-training


def test_combination_masks_pick_exact_patterns() -> None:
    model = _model()
    masks = combination_sample_masks(model, make_batch().present)
    assert masks.shape == (len(ALL_ROWS), 7)
    assert masks[:7].diagonal().all() and masks.sum() == 7  # all-missing row matches none


def test_expert_pretraining_trains_only_its_expert_on_its_rows() -> None:
    model = _model()
    model.train()
    batch = make_batch()
    loss = expert_pretraining_loss(model, batch, expert_idx=3)
    assert loss is not None
    loss.backward()
    for j, expert in enumerate(model.experts.experts):
        grads = [p.grad for p in expert.parameters()]
        touched = any(g is not None and g.abs().sum() > 0 for g in grads)
        assert touched == (j == 3)
    assert model.gate is not None and all(p.grad is None for p in model.gate.parameters())
    only_other = make_batch([AVAILABILITY_PATTERNS[0]])
    assert expert_pretraining_loss(model, only_other, expert_idx=3) is None


def test_forced_expert_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="out of range"):
        _model()(make_batch(), expert=7)


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"top_k": 0}, "top_k"),
        ({"gating": "softmax"}, "softmax"),
        ({"missing": "mean"}, "mean"),
        ({"combinations": ((False, False, False),)}, "combinations"),
        ({"alpha": -1.0}, "alpha"),
    ],
)
def test_bad_moe_config_names_the_value(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        MoEConfig(**kwargs)  # type: ignore[arg-type]


def test_bad_model_config_names_the_task() -> None:
    with pytest.raises(ValueError, match="icu_transfer"):
        ModelConfig(ehr=tiny_config().ehr, tasks=("icu_transfer",))


def test_config_round_trips_through_dict() -> None:
    cfg = tiny_config(top_k=1, combinations=((True, False, False), (True, True, False)))
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again == cfg


def test_config_from_before_sequence_input_reads_values_only() -> None:
    d = tiny_config().to_dict()
    assert d["ehr"]["sequence_input"] == "carried"  # the default for new models
    del d["ehr"]["sequence_input"]
    assert ModelConfig.from_dict(d).ehr.sequence_input == "values"


@pytest.mark.parametrize("kind", ["moe", "medfuse", "early", "joint", "late", "unimodal-ehr"])
def test_bf16_autocast_forward_matches_float32(kind: str) -> None:
    """The GPU path runs under bf16 autocast; the same code runs under CPU autocast here:
    finite outputs close to float32, the abstained row's prior exact."""
    from moe_core.baselines import build_model

    torch.manual_seed(0)
    model = build_model(kind, tiny_config()).eval()
    model.set_prior([0.1, 0.3, 0.2])
    batch = make_batch()
    with torch.no_grad():
        ref = model(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(batch)
    assert low.probs.dtype == torch.float32 and torch.isfinite(low.probs).all()
    assert (low.probs - ref.probs).abs().max() < 0.05
    abstained = low.abstain.nonzero().flatten().tolist()
    assert abstained
    assert low.probs[abstained[0]].tolist() == pytest.approx([0.1, 0.3, 0.2], abs=1e-6)
