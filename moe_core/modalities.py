"""Names shared by every package: modalities, tasks, availability patterns.

Keys live here and nowhere else, so a string such as ``"mortality"`` is never
spelled twice in the code base.
"""

from __future__ import annotations

from enum import IntEnum
from itertools import product

__all__ = [
    "AVAILABILITY_PATTERNS",
    "MODALITIES",
    "TASKS",
    "Modality",
    "Task",
    "pattern_name",
]


class Modality(IntEnum):
    """The three modalities, in the column order of ``ModalityBatch.present``."""

    EHR = 0  # demographics + hourly vitals/labs
    TEXT = 1  # clinical notes
    IMAGE = 2  # chest X-ray

    @property
    def letter(self) -> str:
        """The paper's one-letter name (E, T, I)."""
        return "ETI"[self.value]


MODALITIES: tuple[Modality, ...] = tuple(Modality)


class Task(IntEnum):
    """Prediction targets, in the column order of ``ModalityBatch.labels``."""

    MORTALITY = 0  # death before discharge, alive at prediction time
    LONG_LOS = 1  # hospital length of stay > 7 days
    READMISSION = 2  # new admission within 30 days of a live discharge

    @property
    def key(self) -> str:
        return ("mortality", "long_los", "readmission")[self.value]

    @property
    def title(self) -> str:
        return ("In-hospital mortality", "Length of stay > 7 days", "30-day readmission")[
            self.value
        ]


TASKS: tuple[Task, ...] = tuple(Task)

# The 7 non-empty availability patterns, as (ehr, text, image) booleans.
AVAILABILITY_PATTERNS: tuple[tuple[bool, bool, bool], ...] = tuple(
    (e, t, i) for e, t, i in product((True, False), repeat=3) if e or t or i
)


def pattern_name(present: tuple[bool, ...] | list[bool]) -> str:
    """``(True, False, True)`` -> ``"E+I"``; the empty pattern is ``"none"``."""
    letters = [m.letter for m, on in zip(MODALITIES, present, strict=True) if on]
    return "+".join(letters) if letters else "none"
