"""What the cards are built from: one admission's prediction in plain Python.

``moe_core.inference.Predictor`` yields tensors-turned-numbers; ``PredictionView`` adds
what the card needs around them (the data window, counts, the training population)
so that ``cds_hooks.cards`` stays a pure function with no model or FHIR imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["ModelInfo", "PopulationStats", "PredictionView"]


@dataclass(frozen=True, slots=True)
class PopulationStats:
    """One task in the training population: outcome rate and predicted-risk quantiles."""

    prevalence: float  # observed outcome rate, 0..1
    quantiles: tuple[float, ...] = ()  # predicted risk at the 1st..99th percentile (99 values)

    def percentile(self, risk: float) -> int | None:
        """Percentile of ``risk`` among training-population predictions (``None`` if unknown)."""
        if not self.quantiles:
            return None
        below = sum(1 for q in self.quantiles if q <= risk)
        return round(100 * below / (len(self.quantiles) + 1))


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """The served checkpoint, as the card's ``source`` names it."""

    name: str
    version: str
    card_url: str  # absolute URL of the model card served by this app
    synthetic: bool = True  # trained on synthetic patients: never for clinical use
    population: dict[str, PopulationStats] = field(default_factory=dict)  # task key -> stats
    # Modality names of each expert's training combination, e.g. (("EHR", "TEXT"), ("EHR",));
    # empty when unknown (non-MoE checkpoints).
    trained_combinations: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class PredictionView:
    """One admission's prediction and its context (no patient identifiers except refs)."""

    patient_ref: str  # "Patient/123": only echoed back to the EHR in RiskAssessment
    encounter_ref: str | None
    risks: dict[str, float]  # task key -> probability; empty when abstaining
    gate_weights: dict[str, float]  # expert name (e.g. "E+T") -> routing weight
    modalities_used: tuple[str, ...]  # Modality names, e.g. ("EHR", "TEXT")
    modalities_missing: tuple[str, ...]
    window_start: datetime
    window_end: datetime  # the prediction time
    hours_covered: int  # hours of the observation window with any data
    n_events: int
    n_notes: int
    n_images: int
    quality_notes: tuple[str, ...] = ()
    abstain_reason: str | None = None
