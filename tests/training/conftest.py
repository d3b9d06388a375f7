"""A small synthetic cohort shared by the training tests: synth -> FHIR NDJSON -> cohort."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.fhir_cohort import build_fhir_cohort
from training.synth.generator import SynthConfig, write_cohort

TINY = {"hidden": 16, "batch_size": 16, "lr": 3e-3, "max_tokens": 64, "progress": False,
        "device": "cpu"}  # fmt: skip


@pytest.fixture(scope="session")
def synth_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 synthetic patients with notes and chest X-rays, built into a cohort folder."""
    root = tmp_path_factory.mktemp("synth_cohort")
    write_cohort(SynthConfig(n_patients=120, seed=21), root / "ndjson", progress=False)
    build_fhir_cohort(root / "ndjson", root / "cohort", seed=0)
    return root / "cohort"
