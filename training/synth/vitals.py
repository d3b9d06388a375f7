"""Vital signs and laboratory values of a synthetic admission.

Each variable has a LOINC code, a UCUM unit and a level that moves with the latent
physiology ``severity + drift * hours / 48`` (see ``outcomes.py``), plus measurement
noise. Vitals come every 1-2 hours (temperature and GCS every 3-5), labs about daily,
weight and height once.
Temperatures are written in degrees Fahrenheit for some patients and weights in
pounds for others, as real exports mix units; blood pressure is a panel (85354-9)
with systolic (8480-6) and diastolic (8462-4) components.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

from training.synth.outcomes import LatentPatient

__all__ = [
    "BP_DIASTOLIC",
    "BP_PANEL",
    "BP_SYSTOLIC",
    "VARIABLES",
    "Cadence",
    "Measurement",
    "SynthVariable",
    "UnitChoice",
    "measurements",
    "variable",
]

BP_PANEL = ("85354-9", "Blood pressure panel with all children optional")
BP_SYSTOLIC = ("8480-6", "Systolic blood pressure")
BP_DIASTOLIC = ("8462-4", "Diastolic blood pressure")


class Cadence(Enum):
    VITAL = "vital"  # every 1-2 h
    SLOW_VITAL = "slow_vital"  # every 3-5 h (temperature, GCS)
    LAB = "lab"  # about every 24 h, first draw within 3 h of admission
    ONCE = "once"  # at admission


@dataclass(frozen=True, slots=True)
class SynthVariable:
    """How one variable is generated (values in ``unit``)."""

    key: str
    loinc: str
    display: str
    unit: str  # UCUM code
    base: float
    per_severity: float  # change per unit of latent physiology
    noise: float  # measurement noise sd
    lo: float
    hi: float
    decimals: int
    cadence: Cadence
    category: str  # FHIR observation-category code: "vital-signs" | "laboratory"
    log_scale: bool = False  # lognormal: base and per_severity act on log(value)


@dataclass(frozen=True, slots=True)
class UnitChoice:
    """Per-patient unit habits of the sending system."""

    fahrenheit: bool
    pounds: bool


@dataclass(frozen=True, slots=True)
class Measurement:
    """One value to be written as an Observation (``key`` is the SynthVariable key)."""

    hour: float
    key: str
    value: float
    unit: str
    # For blood pressure: the diastolic value travelling in the same panel.
    second: float | None = None


_V, _S, _L, _O = Cadence.VITAL, Cadence.SLOW_VITAL, Cadence.LAB, Cadence.ONCE
VITALS, LAB = "vital-signs", "laboratory"
_LN = math.log

# fmt: off
VARIABLES: tuple[SynthVariable, ...] = (
    # key, LOINC, display, UCUM unit, base, per severity, noise, lo, hi, decimals, cadence
    SynthVariable("heart_rate", "8867-4", "Heart rate", "/min",
                  84, 11, 6, 30, 220, 0, _V, VITALS),
    SynthVariable("resp_rate", "9279-1", "Respiratory rate", "/min",
                  18, 3, 2, 4, 60, 0, _V, VITALS),
    SynthVariable("spo2", "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry",
                  "%", 97, -1.8, 1.2, 60, 100, 0, _V, VITALS),
    SynthVariable("temperature", "8310-5", "Body temperature", "Cel",
                  37.0, 0.35, 0.25, 33, 42, 1, _S, VITALS),
    SynthVariable("sbp", BP_SYSTOLIC[0], BP_SYSTOLIC[1], "mm[Hg]",
                  122, -11, 9, 50, 240, 0, _V, VITALS),
    SynthVariable("dbp", BP_DIASTOLIC[0], BP_DIASTOLIC[1], "mm[Hg]",
                  68, -6, 6, 25, 140, 0, _V, VITALS),
    SynthVariable("gcs", "9269-2", "Glasgow coma score total", "{score}",
                  14.6, -1.1, 0.6, 3, 15, 0, _S, VITALS),
    SynthVariable("glucose", "2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL",
                  128, 18, 22, 30, 900, 0, _L, LAB),
    SynthVariable("creatinine", "2160-0", "Creatinine [Mass/volume] in Serum or Plasma",
                  "mg/dL", _LN(1.0), 0.28, 0.1, 0.2, 15, 2, _L, LAB, log_scale=True),
    SynthVariable("bun", "3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", "mg/dL",
                  20, 7, 3, 2, 200, 0, _L, LAB),
    SynthVariable("sodium", "2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L",
                  139, -1.6, 1.5, 110, 170, 0, _L, LAB),
    SynthVariable("potassium", "2823-3", "Potassium [Moles/volume] in Serum or Plasma",
                  "mmol/L", 4.1, 0.2, 0.25, 2, 8, 1, _L, LAB),
    SynthVariable("chloride", "2075-0", "Chloride [Moles/volume] in Serum or Plasma",
                  "mmol/L", 104, 1.2, 2, 70, 140, 0, _L, LAB),
    SynthVariable("bicarbonate", "1963-8", "Bicarbonate [Moles/volume] in Serum or Plasma",
                  "mmol/L", 24, -2.2, 1.5, 5, 45, 0, _L, LAB),
    SynthVariable("hemoglobin", "718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL",
                  11.6, -0.8, 0.5, 4, 20, 1, _L, LAB),
    SynthVariable("wbc", "6690-2", "Leukocytes [#/volume] in Blood by Automated count",
                  "10*3/uL", 9.5, 3.0, 1.5, 0.5, 80, 1, _L, LAB),
    SynthVariable("platelets", "777-3", "Platelets [#/volume] in Blood by Automated count",
                  "10*3/uL", 225, -35, 20, 5, 900, 0, _L, LAB),
    SynthVariable("lactate", "2524-7", "Lactate [Moles/volume] in Serum or Plasma", "mmol/L",
                  _LN(1.4), 0.33, 0.12, 0.3, 20, 1, _L, LAB, log_scale=True),
    SynthVariable("ph", "2744-1", "pH of Arterial blood", "[pH]",
                  7.39, -0.035, 0.02, 6.8, 7.7, 2, _L, LAB),
    SynthVariable("weight", "29463-7", "Body weight", "kg",
                  80, 0, 15, 30, 250, 1, _O, VITALS),
    SynthVariable("height", "8302-2", "Body height", "cm",
                  170, 0, 9, 130, 210, 0, _O, VITALS),
)
# fmt: on

_BY_KEY = {v.key: v for v in VARIABLES}


def _value(var: SynthVariable, physiology: float, rng: np.random.Generator) -> float:
    if var.log_scale:
        x = math.exp(var.base + var.per_severity * physiology + rng.normal(0.0, var.noise))
    else:
        x = var.base + var.per_severity * physiology + float(rng.normal(0.0, var.noise))
    return round(min(max(x, var.lo), var.hi), var.decimals)


def _times(cadence: Cadence, hours: float, rng: np.random.Generator) -> list[float]:
    if cadence is Cadence.ONCE:
        return [float(rng.uniform(0.1, 1.5))]
    if cadence is Cadence.LAB:
        out, t = [], float(rng.uniform(0.5, 3.0))
        while t < hours:
            out.append(t)
            t += float(rng.uniform(20.0, 28.0))
        return out
    lo, hi = (0.75, 2.0) if cadence is Cadence.VITAL else (3.0, 5.0)
    out, t = [], float(rng.uniform(0.0, 1.0))
    while t < hours:
        out.append(t)
        t += float(rng.uniform(lo, hi))
    return out


def measurements(
    latent: LatentPatient,
    hours: float,
    units: UnitChoice,
    rng: np.random.Generator,
    allowed_loinc: frozenset[str] | None = None,
) -> list[Measurement]:
    """Every measurement of one admission over its first ``hours`` hours, time-ordered.

    ``allowed_loinc`` restricts output to codes the feature spec knows (``None``: all).
    A patient-level offset per variable (``N(0, noise)``) makes individuals differ.
    """
    out: list[Measurement] = []
    for var in VARIABLES:
        if var.key == "dbp":
            continue  # written with sbp, in one panel
        codes = {var.loinc, BP_DIASTOLIC[0]} if var.key == "sbp" else {var.loinc}
        if allowed_loinc is not None and not codes & allowed_loinc:
            continue
        person = float(rng.normal(0.0, var.noise))
        for t in _times(var.cadence, hours, rng):
            physiology = latent.severity + latent.drift * t / 48.0
            value = _value(var, physiology, rng) + (
                0.0 if var.log_scale else round(person, var.decimals)
            )
            value = round(min(max(value, var.lo), var.hi), var.decimals)
            unit = var.unit
            second: float | None = None
            if var.key == "temperature" and units.fahrenheit:
                value, unit = round(value * 9.0 / 5.0 + 32.0, 1), "[degF]"
            elif var.key == "weight" and units.pounds:
                value, unit = round(value / 0.45359237, 1), "[lb_av]"
            elif var.key == "sbp":
                second = _value(_BY_KEY["dbp"], physiology, rng)
                second = min(second, value - 10.0)
            out.append(Measurement(round(t, 3), var.key, value, unit, second))
    out.sort(key=lambda m: m.hour)
    return out


def variable(key: str) -> SynthVariable:
    """The definition of variable ``key``."""
    return _BY_KEY[key]
