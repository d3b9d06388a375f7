"""``build-cohort``: one entry point for every source, one cohort format out.

Sources: MIMIC-IV (+ notes, CXR-JPG), PhysioNet/CinC 2012, or a FHIR Bulk NDJSON export.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moe_core.records import DEFAULT_WINDOW_HOURS

__all__ = ["BuildCohortRequest", "run_build_cohort"]


@dataclass(frozen=True, slots=True)
class BuildCohortRequest:
    """Command-line options of ``build-cohort``, validated."""

    out: Path
    mimic_dir: Path | None = None
    notes_dir: Path | None = None
    cxr_dir: Path | None = None
    physionet2012: Path | None = None
    physionet_sets: tuple[str, ...] = ("a",)
    fhir_ndjson: Path | None = None
    window_hours: int = DEFAULT_WINDOW_HOURS
    seed: int = 0
    memory_limit: str = "8GB"
    temp_dir: Path | None = None
    threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        sources = [s for s in (self.mimic_dir, self.physionet2012, self.fhir_ndjson) if s]
        if len(sources) != 1:
            raise ValueError(
                "give exactly one source: --mimic-dir, --physionet2012 or --fhir-ndjson"
            )
        if (self.notes_dir or self.cxr_dir) and self.mimic_dir is None:
            raise ValueError("--notes-dir and --cxr-dir go with --mimic-dir")


def run_build_cohort(req: BuildCohortRequest) -> dict[str, Any]:
    """Build the cohort folder ``req.out``; returns the saved summary."""
    if req.mimic_dir is not None:
        from training.mimic import MimicCohortConfig, build_mimic_cohort

        return build_mimic_cohort(
            MimicCohortConfig(
                mimic_dir=req.mimic_dir,
                out=req.out,
                notes_dir=req.notes_dir,
                cxr_dir=req.cxr_dir,
                window_hours=req.window_hours,
                seed=req.seed,
                memory_limit=req.memory_limit,
                temp_dir=req.temp_dir,
                threads=req.threads,
                progress=req.progress,
            )
        )
    if req.physionet2012 is not None:
        from training.physionet import PhysioNetConfig, build_physionet_cohort

        return build_physionet_cohort(
            PhysioNetConfig(
                data_dir=req.physionet2012,
                out=req.out,
                sets=req.physionet_sets,
                window_hours=req.window_hours,
                seed=req.seed,
                progress=req.progress,
            )
        )
    assert req.fhir_ndjson is not None
    from training.fhir_cohort import build_fhir_cohort

    return build_fhir_cohort(
        req.fhir_ndjson, req.out, window_hours=req.window_hours, seed=req.seed,
        progress=req.progress,
    )  # fmt: skip
