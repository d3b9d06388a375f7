"""Evaluation reports: Markdown tables and PNG plots (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from training.predict import Predictions

__all__ = [
    "checkpoint_markdown",
    "fmt_ci",
    "plot_gate_heatmap",
    "plot_reliability",
    "plot_roc",
    "write_checkpoint_report",
]

Curve = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fmt_ci(m: Mapping[str, float | None] | None) -> str:
    """``0.812 (0.780-0.843)`` from a ``MetricWithCI.to_dict()``; ``n/a`` when missing."""
    if not m or m.get("value") is None:
        return "n/a"
    v = float(m["value"])  # type: ignore[arg-type]
    if m.get("lo") is None:
        return f"{v:.3f}"
    return f"{v:.3f} ({float(m['lo']):.3f}-{float(m['hi']):.3f})"  # type: ignore[arg-type]


def plot_roc(path: Path, curves: Mapping[str, Curve], title: str) -> None:
    """ROC curves of several models (or tasks) in one figure."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    drawn = 0
    for name, (y, p) in curves.items():
        if y.size == 0 or y.min() == y.max():
            continue
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {roc_auc_score(y, p):.3f})")
        drawn += 1
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.set_title(title)
    if drawn:
        ax.legend(fontsize=7, loc="lower right")
    else:  # every curve needs both classes among the test labels
        ax.text(0.5, 0.5, "no curve: one class only", ha="center", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reliability(path: Path, bins_by_task: Mapping[str, list[dict[str, float]]]) -> None:
    """Reliability diagram: observed rate against mean predicted probability per bin."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for task, bins in bins_by_task.items():
        if bins:
            ax.plot([b["mean_pred"] for b in bins], [b["observed"] for b in bins], "o-", label=task)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("Mean predicted probability")
    ax.set_ylabel("Observed rate")
    ax.set_title("Calibration (test)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_gate_heatmap(path: Path, gates: Mapping[str, list[float]], experts: list[str]) -> None:
    """Mean gate weight per expert (columns) for each availability combination (rows)."""
    plt = _plt()
    rows = list(gates)
    data = np.array([gates[r] for r in rows]) if rows else np.zeros((0, len(experts)))
    fig, ax = plt.subplots(
        figsize=(1.2 + 0.9 * max(len(experts), 1), 1.2 + 0.5 * max(len(rows), 1))
    )
    im = ax.imshow(data, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(experts)), experts, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", color="w", fontsize=7)
    ax.set_xlabel("expert")
    ax.set_ylabel("available modalities")
    ax.set_title("Gate weights per combination (test)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def checkpoint_markdown(result: Mapping[str, Any]) -> str:
    """The Markdown report of one checkpoint's evaluation."""
    lines = [f"# Evaluation of `{result['checkpoint']}` ({result['model']})", ""]
    lines += ["| task | n | positives | threshold (val) | AUROC | AUPRC | F1 | Brier |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for task, r in result["tasks"].items():
        m = r["metrics"]
        lines.append(
            f"| {task} | {r['n']} | {r['positives']} | {r['threshold']:.3f} | "
            f"{fmt_ci(m['auroc'])} | {fmt_ci(m['auprc'])} | {fmt_ci(m['f1'])} | "
            f"{fmt_ci(m['brier'])} |"
        )
    lines += ["", "## Per availability combination (test, AUROC / AUPRC)", ""]
    tasks = list(result["tasks"])
    lines += ["| combination | n | " + " | ".join(tasks) + " |",
              "| --- | --- | " + " | ".join("---" for _ in tasks) + " |"]  # fmt: skip
    for combo, entry in result["per_combination"].items():
        cells = [f"{fmt_ci(entry[t]['auroc'])} / {fmt_ci(entry[t]['auprc'])}" for t in tasks]
        lines.append(f"| {combo} | {entry['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_checkpoint_report(out: Path, result: Mapping[str, Any], test: Predictions) -> str:
    """``report.md`` + ``roc.png``, ``reliability.png`` (+ ``gates.png``) in ``out``."""
    text = checkpoint_markdown(result)
    curves = {}
    for task in test.tasks:
        y, p, _ = test.task_arrays(task)
        curves[task] = (y, p)
    plot_roc(out / "roc.png", curves, "ROC (test)")
    plot_reliability(out / "reliability.png",
                     {t: r["reliability"] for t, r in result["tasks"].items()})  # fmt: skip
    if result["gates"]:
        plot_gate_heatmap(out / "gates.png", result["gates"], list(result["expert_names"]))
        text += "\n![gate weights](gates.png)\n"
    text += "\n![ROC](roc.png)\n\n![calibration](reliability.png)\n"
    (out / "report.md").write_text(text)
    return text
