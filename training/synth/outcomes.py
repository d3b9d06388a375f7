"""Latent risk factors and the logistic outcome model of the synthetic cohort.

Each admission draws four independent latent factors (all standard normal unless
stated) and an age:

- ``severity``: physiological derangement at admission; it shifts every vital sign and
  lab (heart rate up, blood pressure down, lactate up, ...; see ``vitals.py``);
- ``drift``: how the physiology moves over the first 48 h (``~ N(0.3 * severity, 0.5)``,
  so sick patients tend to worsen); visible only as the trend of the time series;
- ``course``: the clinical course as clinicians describe it; visible only in the
  wording of nursing, physician and radiology notes (``notes.py``);
- ``opacity``: lung opacity; visible only in the chest X-ray pixels (a bright blob
  whose presence and radius grow with it; ``images.py``) and in the radiology report;
- ``age`` in years, ``N(64, 16)`` clipped to [18, 95].

The EHR carries ``x_ehr = severity + 0.5 * drift`` (through noisy measurements), the
notes carry ``course``, the image carries ``opacity``. The outcomes are Bernoulli draws
from logistic models of those, so every modality adds signal the others cannot give,
with known weights:

    logit P(mortality)   = -3.4 + 1.0 x_ehr + 0.9 course + 0.9 opacity + 0.25 (age - 65) / 15
    logit P(long LOS)    = -0.9 + 0.7 x_ehr + 0.6 course + 0.6 opacity
    logit P(readmission) = -2.0 + 0.5 x_ehr + 0.8 course + 0.3 opacity + 0.2 (age - 65) / 15
                           (drawn only for patients discharged alive)

Resulting rates are about 10% mortality, 33% stays > 7 days and 15% readmissions.
Modality availability is drawn independently of these factors (``availability.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "COEFFICIENTS",
    "LatentPatient",
    "OutcomeCoefficients",
    "Outcomes",
    "draw_latent",
    "draw_outcomes",
    "outcome_logits",
]


@dataclass(frozen=True, slots=True)
class OutcomeCoefficients:
    """Intercept and weights of one task's logistic model."""

    intercept: float
    ehr: float
    course: float
    opacity: float
    age: float  # per 15 years above 65


COEFFICIENTS: dict[str, OutcomeCoefficients] = {
    "mortality": OutcomeCoefficients(-3.4, 1.0, 0.9, 0.9, 0.25),
    "long_los": OutcomeCoefficients(-0.9, 0.7, 0.6, 0.6, 0.0),
    "readmission": OutcomeCoefficients(-2.0, 0.5, 0.8, 0.3, 0.2),
}


@dataclass(frozen=True, slots=True)
class LatentPatient:
    """The hidden state one synthetic admission is generated from."""

    age: float
    severity: float
    drift: float
    course: float
    opacity: float

    @property
    def x_ehr(self) -> float:
        """The part of the risk the vitals and labs express."""
        return self.severity + 0.5 * self.drift


@dataclass(frozen=True, slots=True)
class Outcomes:
    """Drawn outcomes of one admission."""

    mortality: bool
    long_los: bool
    readmission: bool  # always False when the patient died in hospital


def draw_latent(rng: np.random.Generator) -> LatentPatient:
    """Draw the latent factors of one admission."""
    age = float(np.clip(rng.normal(64.0, 16.0), 18.0, 95.0))
    severity = float(rng.normal())
    drift = float(rng.normal(0.3 * severity, 0.5))
    course = float(rng.normal())
    opacity = float(rng.normal())
    return LatentPatient(age, severity, drift, course, opacity)


def outcome_logits(latent: LatentPatient) -> dict[str, float]:
    """Log-odds of each outcome under the documented model."""
    out: dict[str, float] = {}
    for task, c in COEFFICIENTS.items():
        out[task] = (
            c.intercept
            + c.ehr * latent.x_ehr
            + c.course * latent.course
            + c.opacity * latent.opacity
            + c.age * (latent.age - 65.0) / 15.0
        )
    return out


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def draw_outcomes(latent: LatentPatient, rng: np.random.Generator) -> Outcomes:
    """Bernoulli draws from the logistic models; no readmission after an in-hospital death."""
    logits = outcome_logits(latent)
    u = rng.random(3)
    mortality = bool(u[0] < _sigmoid(logits["mortality"]))
    long_los = bool(u[1] < _sigmoid(logits["long_los"]))
    readmission = (not mortality) and bool(u[2] < _sigmoid(logits["readmission"]))
    return Outcomes(mortality, long_los, readmission)
