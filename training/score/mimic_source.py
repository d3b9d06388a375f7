"""``--mimic-dir``: MIMIC-IV admissions scored directly, without FHIR.

The cohort builder (``training.mimic``) writes its cohort folder to a temporary
directory and the records are streamed back from it. Each admission is its own group
(ledger key ``<subject_id>/<hadm_id>``), so ``--resume`` works per admission here; the
records carry the real subject and admission ids, so the outputs name them as the FHIR
path does (``Patient/<subject_id>``, ``Encounter/<hadm_id>``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from moe_core.records import PatientRecord
from training.score.pipeline import PatientGroup

__all__ = ["MimicSource", "prebuilt_records"]


def prebuilt_records(group: PatientGroup) -> list[PatientRecord]:
    """The record builder of a group that already holds ``PatientRecord`` s."""
    return [r for r in group.resources if isinstance(r, PatientRecord)]


@dataclass(frozen=True, slots=True)
class MimicSource:
    """Cohort admissions of a MIMIC-IV folder (hosp/ + icu/ csv.gz)."""

    mimic_dir: Path
    workdir: Path | None = None  # where the temporary cohort folder goes

    def groups(self, skip: set[str] | frozenset[str] = frozenset()) -> Iterator[PatientGroup]:
        """One group per cohort admission not in ``skip``."""
        from training.cohort_store import read_records
        from training.mimic import MimicCohortConfig, build_mimic_cohort

        with tempfile.TemporaryDirectory(prefix="moe-score-mimic-", dir=self.workdir) as tmp:
            cohort = Path(tmp) / "cohort"
            build_mimic_cohort(MimicCohortConfig(self.mimic_dir, cohort, temp_dir=self.workdir))
            for record in read_records(cohort):
                key = f"{record.patient_id}/{record.encounter_id}"
                if key not in skip:
                    yield PatientGroup(key, [record])
