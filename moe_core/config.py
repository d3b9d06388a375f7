"""Model configuration: one dataclass per component, JSON round-trippable.

Each ``__post_init__`` rejects bad values and names them. The set of expert
combinations is data (``MoEConfig.combinations``) and travels with the checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from moe_core.encoders.ehr import EHREncoderConfig
from moe_core.encoders.image import ImageEncoderConfig
from moe_core.encoders.text import TextEncoderConfig
from moe_core.modalities import AVAILABILITY_PATTERNS, MODALITIES, TASKS, Task, pattern_name

__all__ = [
    "EXPERT_MODES",
    "GATING_MODES",
    "MISSING_MODES",
    "Combination",
    "MoEConfig",
    "ModelConfig",
]

Combination = tuple[bool, bool, bool]  # (ehr, text, image) availability of one expert
MISSING_MODES = ("learned", "zero")  # eq. 9 embeddings | ablation: zero-padding
EXPERT_MODES = ("specialised", "generic")  # one per combination | ablation: generic
GATING_MODES = ("learned", "uniform")  # eq. 11 gating | ablation: average all experts


@dataclass(slots=True)
class MoEConfig:
    """The fusion layer (paper section 3.2.2) and its ablation switches."""

    combinations: tuple[Combination, ...] = AVAILABILITY_PATTERNS  # seen in training
    expert_hidden: int = 256
    gate_hidden: int = 128  # d_R of eq. 11
    top_k: int = 2  # paper: k = 2; top_k = 1 is the "w/o top-k routing" ablation
    alpha: float = 0.01  # balance-loss weight (paper section 4.3)
    missing: str = "learned"
    experts: str = "specialised"
    n_generic_experts: int | None = None  # generic ablation; None = len(combinations)
    gating: str = "learned"

    def __post_init__(self) -> None:
        self.combinations = tuple(
            tuple(bool(x) for x in c)  # type: ignore[misc]
            for c in self.combinations
        )
        bad: dict[str, Any] = {}
        if not self.combinations:
            bad["combinations"] = self.combinations
        for c in self.combinations:
            if len(c) != len(MODALITIES) or not any(c):
                bad["combinations"] = self.combinations
        if len(set(self.combinations)) != len(self.combinations):
            bad["combinations (duplicates)"] = self.combinations
        if self.expert_hidden <= 0:
            bad["expert_hidden"] = self.expert_hidden
        if self.gate_hidden <= 0:
            bad["gate_hidden"] = self.gate_hidden
        if self.top_k < 1:
            bad["top_k"] = self.top_k
        if self.alpha < 0:
            bad["alpha"] = self.alpha
        if self.missing not in MISSING_MODES:
            bad["missing"] = self.missing
        if self.experts not in EXPERT_MODES:
            bad["experts"] = self.experts
        if self.gating not in GATING_MODES:
            bad["gating"] = self.gating
        if self.n_generic_experts is not None and self.n_generic_experts < 1:
            bad["n_generic_experts"] = self.n_generic_experts
        if bad:
            raise ValueError(f"MoEConfig: invalid values {bad}")

    @property
    def n_experts(self) -> int:
        if self.experts == "generic":
            return self.n_generic_experts or len(self.combinations)
        return len(self.combinations)

    @property
    def effective_k(self) -> int:
        return min(self.top_k, self.n_experts)

    def expert_names(self) -> list[str]:
        """``"E+T+I"``-style names for specialised experts, ``"G1"``... for generic ones."""
        if self.experts == "generic":
            return [f"G{i + 1}" for i in range(self.n_experts)]
        return [pattern_name(c) for c in self.combinations]


@dataclass(slots=True)
class ModelConfig:
    """Everything needed to rebuild a model (saved as JSON in the checkpoint)."""

    ehr: EHREncoderConfig
    d_h: int = 256  # the shared embedding width (paper's d_h)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)
    tasks: tuple[str, ...] = tuple(t.key for t in TASKS)  # one or several Task keys
    dropout: float = 0.1
    fusion_hidden: int = 256  # early/joint fusion MLP and MedFuse LSTM width
    unimodal: str | None = None  # "ehr" | "text" | "image" for unimodal baselines

    def __post_init__(self) -> None:
        self.tasks = tuple(self.tasks)
        known = {t.key for t in TASKS}
        bad: dict[str, Any] = {}
        if self.d_h <= 0:
            bad["d_h"] = self.d_h
        if not self.tasks or any(t not in known for t in self.tasks):
            bad["tasks"] = self.tasks
        if len(set(self.tasks)) != len(self.tasks):
            bad["tasks (duplicates)"] = self.tasks
        if not 0.0 <= self.dropout < 1.0:
            bad["dropout"] = self.dropout
        if self.fusion_hidden <= 0:
            bad["fusion_hidden"] = self.fusion_hidden
        if self.unimodal is not None and self.unimodal not in {m.name.lower() for m in MODALITIES}:
            bad["unimodal"] = self.unimodal
        if bad:
            raise ValueError(f"ModelConfig: invalid values {bad} (tasks must be from {known})")

    @property
    def task_columns(self) -> list[int]:
        """Columns of ``ModalityBatch.labels`` this model predicts, in its output order."""
        by_key = {t.key: int(t) for t in Task}
        return [by_key[k] for k in self.tasks]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["moe"]["combinations"] = [list(c) for c in self.moe.combinations]
        d["tasks"] = list(self.tasks)
        d["ehr"]["cat_cardinalities"] = list(self.ehr.cat_cardinalities)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        moe = dict(d.get("moe", {}))
        if "combinations" in moe:
            moe["combinations"] = tuple(tuple(c) for c in moe["combinations"])
        ehr = dict(d["ehr"])
        ehr["cat_cardinalities"] = tuple(ehr["cat_cardinalities"])
        ehr.setdefault("sequence_input", "values")  # checkpoints from before the option
        rest = {k: v for k, v in d.items() if k not in {"ehr", "text", "image", "moe"}}
        if "tasks" in rest:
            rest["tasks"] = tuple(rest["tasks"])
        return cls(
            ehr=EHREncoderConfig(**ehr),
            text=TextEncoderConfig(**d.get("text", {})),
            image=ImageEncoderConfig(**d.get("image", {})),
            moe=MoEConfig(**moe),
            **rest,
        )
