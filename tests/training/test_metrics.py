"""Evaluation metrics: validation-chosen F1 threshold, Brier, bootstrap CIs, reliability."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from training.evaluate import evaluate_predictions
from training.metrics import (
    auprc,
    auroc,
    best_f1_threshold,
    bootstrap_ci,
    brier,
    f1_at,
    reliability_bins,
    task_metrics,
)


def _data(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.float64)
    p = np.clip(0.3 + 0.35 * (y - 0.3) + rng.normal(0, 0.2, n), 0.001, 0.999)
    return y, p


def test_best_f1_threshold_maximises_f1_over_every_cut() -> None:
    y, p = _data()
    thr = best_f1_threshold(y, p)
    best = f1_at(y, p, thr)
    for t in np.unique(p):
        assert f1_at(y, p, float(t)) <= best + 1e-12
    assert best == pytest.approx(f1_score(y.astype(int), (p >= thr).astype(int)))


def test_best_f1_threshold_on_a_hand_made_case() -> None:
    y = np.array([0, 0, 1, 0, 1, 1], dtype=np.float64)
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.8, 0.9])
    # cut 0.3 -> predicted {0.3,0.4,0.8,0.9}: tp 3, fp 1 -> F1 6/7; cut 0.8 -> tp 2 -> 0.8
    assert best_f1_threshold(y, p) == pytest.approx(0.3)
    assert best_f1_threshold(np.zeros(4), np.linspace(0, 1, 4)) == 0.5  # one class


def test_threshold_comes_from_validation_not_test() -> None:
    """evaluate_predictions applies the validation threshold unchanged to test."""
    from training.predict import Predictions

    yv, pv = _data(300, seed=1)
    yt, pt = _data(300, seed=2)
    pt = np.clip(pt + 0.2, 0, 1)  # test probabilities shifted: its own best cut differs

    def preds(y: np.ndarray, p: np.ndarray) -> Predictions:
        n = y.size
        labels = np.zeros((n, 3))
        labels[:, 0] = y  # mortality is the first task column
        return Predictions(
            keys=[str(i) for i in range(n)], tasks=("mortality",), probs=p[:, None],
            labels=labels, label_mask=np.ones((n, 3), dtype=bool),
            present=np.ones((n, 3), dtype=bool), abstain=np.zeros(n, dtype=bool),
            expert_weights=np.zeros((n, 0)),
        )  # fmt: skip

    out = evaluate_predictions(preds(yv, pv), preds(yt, pt), n_boot=0, seed=0)["mortality"]
    thr = best_f1_threshold(yv, pv)
    assert out["threshold"] == pytest.approx(thr, abs=1e-6)
    assert thr != pytest.approx(best_f1_threshold(yt, pt))
    assert out["metrics"]["f1"]["value"] == pytest.approx(f1_at(yt, pt, thr), abs=1e-4)


def test_brier_by_hand() -> None:
    y = np.array([1.0, 0.0, 1.0, 0.0])
    p = np.array([0.9, 0.2, 0.4, 0.0])
    assert brier(y, p) == pytest.approx((0.01 + 0.04 + 0.36 + 0.0) / 4)
    assert math.isnan(brier(np.array([]), np.array([])))


def test_ranking_metrics_and_one_class() -> None:
    y, p = _data()
    assert auroc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert 0 < auprc(y, p) <= 1
    assert math.isnan(auroc(np.ones(5), np.linspace(0, 1, 5)))


def test_bootstrap_ci_contains_the_estimate_and_is_seeded() -> None:
    y, p = _data()
    a = bootstrap_ci(y, p, auroc, n_boot=300, seed=5)
    b = bootstrap_ci(y, p, auroc, n_boot=300, seed=5)
    c = bootstrap_ci(y, p, auroc, n_boot=300, seed=6)
    assert a == b
    assert (a.lo, a.hi) != (c.lo, c.hi)
    assert a.lo < a.value < a.hi
    assert 0.0 < a.hi - a.lo < 0.2
    assert a.value == pytest.approx(auroc(y, p))
    none = bootstrap_ci(y, p, auroc, n_boot=0, seed=5)
    assert math.isnan(none.lo) and math.isnan(none.hi)
    for m in task_metrics(y, p, threshold=0.4, n_boot=200, seed=1).values():
        assert m.lo <= m.value <= m.hi


def test_reliability_bins() -> None:
    y = np.array([0, 0, 1, 1, 1, 0], dtype=np.float64)
    p = np.array([0.05, 0.15, 0.15, 0.95, 0.99, 1.0])
    bins = reliability_bins(y, p, n_bins=10)
    assert [(b["lo"], b["count"]) for b in bins] == [(0.0, 1.0), (0.1, 2.0), (0.9, 3.0)]
    assert bins[1]["mean_pred"] == pytest.approx(0.15)
    assert bins[1]["observed"] == pytest.approx(0.5)
    assert bins[2]["observed"] == pytest.approx(2 / 3)
    assert sum(b["count"] for b in reliability_bins(*_data())) == 400
