"""Templated clinical notes whose wording carries the latent clinical course.

Nursing and physician notes pick sentences from phrase banks ordered from reassuring
to grave; which bank a sentence comes from follows ``course + N(0, 0.4)`` (see
``outcomes.py``), so the text carries the course with noise. Radiology reports
describe the chest X-ray's opacity. A discharge summary is also written, dated at
discharge: it states the outcome and must never be used as a model input (the
cohort builders drop it; it is there to test that guard).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.synth.outcomes import LatentPatient, Outcomes

__all__ = [
    "COURSE_PHRASES",
    "NOTE_KINDS",
    "SynthNote",
    "discharge_summary",
    "notes_for",
    "radiology_report",
]

# kind -> (LOINC code, display)
NOTE_KINDS: dict[str, tuple[str, str]] = {
    "nursing": ("34746-8", "Nurse Note"),
    "physician": ("11506-3", "Progress note"),
    "radiology": ("18748-4", "Diagnostic imaging study"),
    "discharge": ("18842-5", "Discharge summary"),
}

# Four levels, from reassuring (0) to grave (3).
COURSE_PHRASES: tuple[tuple[str, ...], ...] = (
    (
        "Patient resting comfortably, alert and oriented x3.",
        "Ambulating in hallway with steady gait.",
        "Tolerating regular diet, no nausea.",
        "Pain well controlled on oral analgesia.",
        "Anticipate discharge home in the next few days.",
    ),
    (
        "Patient alert, intermittently drowsy, follows commands.",
        "Mild dyspnea on exertion, weaned to 2 L nasal cannula.",
        "Appetite fair, taking small amounts by mouth.",
        "Hemodynamically stable, continue current management.",
        "Physical therapy consulted for deconditioning.",
    ),
    (
        "Increasing oxygen requirement overnight, now on high-flow nasal cannula.",
        "Patient lethargic, responds to voice only.",
        "New fever spike, blood cultures sent, broadened antibiotics.",
        "Urine output decreased, fluid bolus given.",
        "Started on low-dose norepinephrine for hypotension.",
    ),
    (
        "Worsening respiratory failure despite maximal support, intubated.",
        "Escalating vasopressor requirement, now on two pressors.",
        "Family meeting held to discuss goals of care; code status changed to DNR.",
        "Patient unresponsive to painful stimuli.",
        "Prognosis guarded; palliative care consulted.",
    ),
)

_NEUTRAL = (
    "Lines and drains intact.",
    "Skin intact, turned every two hours.",
    "Medications administered as ordered.",
    "Will continue to monitor.",
)


@dataclass(frozen=True, slots=True)
class SynthNote:
    """One note before it becomes a DocumentReference."""

    hour: float
    kind: str
    text: str


def _level(course: float, rng: np.random.Generator) -> int:
    x = course + float(rng.normal(0.0, 0.4))
    return 0 if x < -0.7 else 1 if x < 0.3 else 2 if x < 1.1 else 3


def _course_text(kind: str, latent: LatentPatient, rng: np.random.Generator) -> str:
    header = "NURSING NOTE" if kind == "nursing" else "PHYSICIAN PROGRESS NOTE"
    lines = [header, f"Synthetic patient, {latent.age:.0f} years old."]
    for _ in range(int(rng.integers(2, 4))):
        bank = COURSE_PHRASES[_level(latent.course, rng)]
        lines.append(bank[int(rng.integers(len(bank)))])
    lines.append(_NEUTRAL[int(rng.integers(len(_NEUTRAL)))])
    if kind == "physician":
        lines.append("Assessment and plan: as above, reassess in the morning.")
    return "\n".join(lines)


def radiology_report(view: str, blob_radius: float) -> str:
    """Findings and impression matching the synthetic image (``blob_radius`` 0 = clear)."""
    if blob_radius <= 0:
        finding = "Lungs are clear. No focal consolidation, effusion or pneumothorax."
        impression = "No acute cardiopulmonary process."
    elif blob_radius < 18:
        finding = "Small patchy opacity in the right lower lobe."
        impression = "Possible early pneumonia; clinical correlation recommended."
    elif blob_radius < 30:
        finding = "Moderate consolidation in the right lower lobe with air bronchograms."
        impression = "Findings consistent with pneumonia."
    else:
        finding = "Extensive dense consolidation involving most of the right lung."
        impression = "Severe multifocal pneumonia; cannot exclude ARDS."
    return "\n".join(
        [
            f"CHEST RADIOGRAPH, {view} VIEW (synthetic).",
            f"FINDINGS: {finding}",
            f"IMPRESSION: {impression}",
        ]
    )


def notes_for(latent: LatentPatient, hours: float, rng: np.random.Generator) -> list[SynthNote]:
    """Nursing notes about every 12 h and physician notes about daily over ``hours``."""
    out: list[SynthNote] = []
    t = float(rng.uniform(2.0, 12.0))
    while t < hours:
        out.append(SynthNote(round(t, 3), "nursing", _course_text("nursing", latent, rng)))
        t += float(rng.uniform(8.0, 16.0))
    t = float(rng.uniform(4.0, 20.0))
    while t < hours:
        out.append(SynthNote(round(t, 3), "physician", _course_text("physician", latent, rng)))
        t += float(rng.uniform(20.0, 28.0))
    out.sort(key=lambda n: n.hour)
    return out


def discharge_summary(outcomes: Outcomes, los_hours: float) -> SynthNote:
    """The summary written at discharge; it states the outcome (never a model input)."""
    status = "Patient expired." if outcomes.mortality else "Discharged home in stable condition."
    text = f"DISCHARGE SUMMARY (synthetic)\nLength of stay {los_hours / 24:.1f} days.\n{status}"
    return SynthNote(los_hours, "discharge", text)
