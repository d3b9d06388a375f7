"""Synthetic multimodal cohorts as FHIR R4 Bulk NDJSON + DICOM (``moe-health synth``).

Clearly labelled synthetic patients with the paper's modality availability mix and
outcomes drawn from a documented logistic model of vitals/labs, note content and
image content (``outcomes.py``).
"""

from training.synth.availability import AvailabilityMix, paper_mix
from training.synth.generator import SynthConfig, SynthSummary, write_cohort
from training.synth.outcomes import COEFFICIENTS, LatentPatient, draw_latent, outcome_logits

__all__ = [
    "COEFFICIENTS",
    "AvailabilityMix",
    "LatentPatient",
    "SynthConfig",
    "SynthSummary",
    "draw_latent",
    "outcome_logits",
    "paper_mix",
    "write_cohort",
]
