"""The modality availability mix of the paper's MIMIC-IV cohort (section 4.1.1, Figure 3).

The paper gives three marginals over 31,088 admissions: EHR 100%, clinical notes
missing in 7,292 (23.5%), chest X-ray missing in 18,871 (60.7%), and all three present
in 11,636 (37.4%). With EHR always present only four patterns remain, and the three
figures fix the joint distribution exactly (counts from the paper's own numbers):

| pattern | notes | CXR | admissions | share |
| --- | --- | --- | --- | --- |
| E+T+I | yes | yes | 11,636 | 37.43% |
| E+T   | yes | no  | 31,088 - 7,292 - 11,636 = 12,160 | 39.11% |
| E+I   | no  | yes | 31,088 - 18,871 - 11,636 = 581 | 1.87% |
| E     | no  | no  | 7,292 - 581 = 6,711 | 21.59% |

Check: notes present 11,636 + 12,160 = 23,796 = 76.5%; CXR present 11,636 + 581 =
12,217 = 39.3%. Availability is drawn independently of the latent risk factors, so a
model cannot learn outcomes from missingness alone (documented in ``outcomes.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "PAPER_ADMISSIONS",
    "PAPER_ALL_THREE",
    "PAPER_CXR_MISSING",
    "PAPER_NOTES_MISSING",
    "AvailabilityMix",
    "paper_mix",
]

PAPER_ADMISSIONS = 31_088
PAPER_NOTES_MISSING = 7_292
PAPER_CXR_MISSING = 18_871
PAPER_ALL_THREE = 11_636


@dataclass(frozen=True, slots=True)
class AvailabilityMix:
    """Probabilities of the four (notes, image) patterns; EHR is always present."""

    text_image: float
    text_only: float
    image_only: float
    ehr_only: float

    def __post_init__(self) -> None:
        probs = (self.text_image, self.text_only, self.image_only, self.ehr_only)
        if any(p < 0 for p in probs) or abs(sum(probs) - 1.0) > 1e-9:
            raise ValueError(f"availability probabilities must be >= 0 and sum to 1, got {probs}")

    @classmethod
    def from_marginals(
        cls, notes_missing: float, image_missing: float, all_three: float
    ) -> AvailabilityMix:
        """Solve the joint from P(notes missing), P(image missing), P(all three)."""
        text_only = 1.0 - notes_missing - all_three
        image_only = 1.0 - image_missing - all_three
        ehr_only = notes_missing - image_only
        mix = (all_three, text_only, image_only, ehr_only)
        if any(p < -1e-12 for p in mix):
            raise ValueError(
                f"marginals notes_missing={notes_missing}, image_missing={image_missing}, "
                f"all_three={all_three} admit no joint distribution (got {mix})"
            )
        return cls(*(max(0.0, p) for p in mix))

    @property
    def notes_present(self) -> float:
        return self.text_image + self.text_only

    @property
    def image_present(self) -> float:
        return self.text_image + self.image_only

    def sample(self, rng: np.random.Generator) -> tuple[bool, bool]:
        """Draw (has_notes, has_image) for one admission."""
        u = float(rng.random())
        if u < self.text_image:
            return True, True
        if u < self.text_image + self.text_only:
            return True, False
        if u < self.text_image + self.text_only + self.image_only:
            return False, True
        return False, False


def paper_mix() -> AvailabilityMix:
    """The joint distribution implied by the paper's counts (see the module docstring)."""
    n = PAPER_ADMISSIONS
    return AvailabilityMix.from_marginals(
        PAPER_NOTES_MISSING / n, PAPER_CXR_MISSING / n, PAPER_ALL_THREE / n
    )
