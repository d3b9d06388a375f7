"""Run a model over a featurised split and collect what metrics and reports need."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch

from moe_core.base import FusionModel
from moe_core.batch import ModalityBatch
from moe_core.modalities import Task

__all__ = ["Predictions", "SplitLike", "predict_split"]


class SplitLike(Protocol):
    """Anything that hands out ``ModalityBatch``es by row (``FeaturizedSplit``, ...)."""

    def __len__(self) -> int: ...

    def batch(self, rows: list[int]) -> ModalityBatch: ...


@dataclass(slots=True)
class Predictions:
    """Per admission: probabilities of the model's tasks, labels, availability, routing."""

    keys: list[str]
    tasks: tuple[str, ...]
    probs: npt.NDArray[np.float64]  # (N, n_tasks) in ``tasks`` order
    labels: npt.NDArray[np.float64]  # (N, 3) in Task order
    label_mask: npt.NDArray[np.bool_]  # (N, 3)
    present: npt.NDArray[np.bool_]  # (N, 3)
    abstain: npt.NDArray[np.bool_]  # (N,)
    expert_weights: npt.NDArray[np.float64]  # (N, E); E = 0 for models without gating
    expert_names: list[str] = field(default_factory=list)

    def task_arrays(
        self, task: str
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        """(labels, probabilities, row mask) of one task: known labels, not abstained."""
        col = [t.key for t in Task].index(task)
        j = self.tasks.index(task)
        rows = self.label_mask[:, col] & ~self.abstain
        return self.labels[rows, col], self.probs[rows, j], rows


@torch.no_grad()
def predict_split(
    model: FusionModel, split: SplitLike, device: torch.device, batch_size: int = 256
) -> Predictions:
    """Evaluate ``model`` (in eval mode) on every row of ``split``."""
    was_training = model.training
    model.eval()
    keys: list[str] = []
    probs, labels, masks, present, abstain, experts = [], [], [], [], [], []
    names: list[str] = []
    for start in range(0, len(split), batch_size):
        rows = list(range(start, min(start + batch_size, len(split))))
        batch = split.batch(rows).to(device)
        out = model(batch)
        keys.extend(batch.keys)
        probs.append(out.probs.double().cpu())
        assert batch.labels is not None and batch.label_mask is not None
        labels.append(batch.labels.double().cpu())
        masks.append(batch.label_mask.cpu())
        present.append(out.present.cpu())
        abstain.append(out.abstain.cpu())
        experts.append(out.expert_weights.double().cpu())
        names = out.expert_names or names
    model.train(was_training)
    n_tasks = len(model.tasks)
    return Predictions(
        keys=keys,
        tasks=tuple(model.tasks),
        probs=torch.cat(probs).numpy() if probs else np.zeros((0, n_tasks)),
        labels=torch.cat(labels).numpy() if labels else np.zeros((0, 3)),
        label_mask=torch.cat(masks).numpy() if masks else np.zeros((0, 3), dtype=bool),
        present=torch.cat(present).numpy() if present else np.zeros((0, 3), dtype=bool),
        abstain=torch.cat(abstain).numpy() if abstain else np.zeros(0, dtype=bool),
        expert_weights=torch.cat(experts).numpy() if experts else np.zeros((0, 0)),
        expert_names=names,
    )
