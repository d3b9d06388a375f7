"""Binary classification metrics with seeded bootstrap confidence intervals.

AUROC, AUPRC (average precision), F1 at a threshold chosen on the validation split
(the one that maximises validation F1, then applied unchanged to test), Brier score and
reliability (calibration) bins. Every metric can come with a percentile bootstrap 95%
CI over admissions (seeded, ``n_boot`` resamples; resamples with one class only are
skipped for the ranking metrics).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

__all__ = [
    "METRIC_NAMES",
    "MetricWithCI",
    "auprc",
    "auroc",
    "best_f1_threshold",
    "bootstrap_ci",
    "brier",
    "f1_at",
    "reliability_bins",
    "task_metrics",
]

FloatArray = npt.NDArray[np.float64]
METRIC_NAMES = ("auroc", "auprc", "f1", "brier")


def _two_classes(y: FloatArray) -> bool:
    return bool(y.size) and 0 < float(y.sum()) < y.size


def auroc(y: FloatArray, p: FloatArray) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    return float(roc_auc_score(y, p)) if _two_classes(y) else math.nan


def auprc(y: FloatArray, p: FloatArray) -> float:
    """Average precision; NaN when only one class is present."""
    return float(average_precision_score(y, p)) if _two_classes(y) else math.nan


def brier(y: FloatArray, p: FloatArray) -> float:
    """Mean squared error of the probabilities."""
    return float(np.mean((p - y) ** 2)) if y.size else math.nan


def f1_at(y: FloatArray, p: FloatArray, threshold: float) -> float:
    """F1 of ``p >= threshold``."""
    if not y.size:
        return math.nan
    return float(f1_score(y.astype(int), (p >= threshold).astype(int), zero_division=0))


def best_f1_threshold(y: FloatArray, p: FloatArray) -> float:
    """The probability threshold maximising F1 on (validation) data; 0.5 if undefined."""
    if not _two_classes(y):
        return 0.5
    # Exact, O(n log n): cutting at each distinct score t predicts ``p >= t``; with k
    # predicted positives holding tp true ones, F1 = 2 tp / (k + positives).
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    tp = np.cumsum(ys)
    last = np.r_[ps[1:] != ps[:-1], True]  # the last row of each run of equal scores
    k = np.arange(1, ps.size + 1)[last]
    f1 = 2.0 * tp[last] / (k + float(y.sum()))
    return float(ps[last][int(np.argmax(f1))])  # ties: the highest threshold


def reliability_bins(y: FloatArray, p: FloatArray, n_bins: int = 10) -> list[dict[str, float]]:
    """Equal-width bins: mean predicted probability, observed rate and count per bin."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        sel = which == b
        if sel.any():
            out.append(
                {
                    "lo": float(edges[b]),
                    "hi": float(edges[b + 1]),
                    "mean_pred": float(p[sel].mean()),
                    "observed": float(y[sel].mean()),
                    "count": float(sel.sum()),
                }
            )
    return out


@dataclass(frozen=True, slots=True)
class MetricWithCI:
    """A point estimate and its bootstrap 95% interval (NaN when not computable)."""

    value: float
    lo: float
    hi: float

    def to_dict(self) -> dict[str, float | None]:
        def clean(x: float) -> float | None:
            return None if math.isnan(x) else round(x, 4)

        return {"value": clean(self.value), "lo": clean(self.lo), "hi": clean(self.hi)}

    def fmt(self) -> str:
        if math.isnan(self.value):
            return "n/a"
        if math.isnan(self.lo):
            return f"{self.value:.3f}"
        return f"{self.value:.3f} ({self.lo:.3f}-{self.hi:.3f})"


def bootstrap_ci(
    y: FloatArray,
    p: FloatArray,
    fn: Callable[[FloatArray, FloatArray], float],
    *,
    n_boot: int,
    seed: int,
) -> MetricWithCI:
    """``fn(y, p)`` with a percentile bootstrap 95% CI (NaN-valued resamples skipped)."""
    value = fn(y, p)
    if n_boot <= 0 or y.size < 2 or math.isnan(value):
        return MetricWithCI(value, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        idx = rng.integers(0, y.size, y.size)
        s = fn(y[idx], p[idx])
        if not math.isnan(s):
            stats.append(s)
    if len(stats) < max(10, n_boot // 10):
        return MetricWithCI(value, math.nan, math.nan)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return MetricWithCI(value, float(lo), float(hi))


def task_metrics(
    y: FloatArray, p: FloatArray, *, threshold: float, n_boot: int, seed: int
) -> dict[str, MetricWithCI]:
    """AUROC, AUPRC, F1 (at ``threshold``) and Brier, each with a bootstrap CI."""
    return {
        "auroc": bootstrap_ci(y, p, auroc, n_boot=n_boot, seed=seed),
        "auprc": bootstrap_ci(y, p, auprc, n_boot=n_boot, seed=seed + 1),
        "f1": bootstrap_ci(
            y, p, lambda a, b: f1_at(a, b, threshold), n_boot=n_boot, seed=seed + 2
        ),
        "brier": bootstrap_ci(y, p, brier, n_boot=n_boot, seed=seed + 3),
    }
