"""MIMIC-IV (+ MIMIC-IV-Note, MIMIC-CXR-JPG) cohort builder over the raw csv.gz files."""

from training.mimic.builder import MimicCohortConfig, build_mimic_cohort
from training.mimic.layout import MimicLayoutError

__all__ = ["MimicCohortConfig", "MimicLayoutError", "build_mimic_cohort"]
