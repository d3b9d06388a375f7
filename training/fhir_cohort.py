"""A hospital's own FHIR Bulk NDJSON export -> the cohort format, through ``fhir_adapters``.

Records come from ``fhir_adapters.ndjson.records_from_ndjson`` (streamed, grouped by
patient): one per inpatient Encounter, labels from Encounter (discharge) and Patient
(deceased date) by ``training.labels``. The same exclusions as MIMIC-IV are applied and
counted: adults only (age unknown is kept and counted), alive and still in hospital at
the prediction time. Chest X-rays come from DICOM attachments or DICOM files beside
the export (``fhir_adapters.imaging``). FHIR has no portable ICU flag, so there is no
ICU-stay step. Patients are split with a seeded hash of their id
(``training.splits.hash_split``), because the export is streamed and its patients are
not known in advance.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from moe_core.records import DEFAULT_WINDOW_HOURS, PatientRecord
from training.cohort_store import write_cohort
from training.labels import EXCLUDE_DIED_IN_WINDOW, EXCLUDE_DISCHARGED_IN_WINDOW, exclusion_reason
from training.splits import hash_split, split_config

__all__ = ["MIN_AGE", "build_fhir_cohort"]

MIN_AGE = 18.0
_NOT_ADULT = "not adult"
_AGE_UNKNOWN = "age unknown (kept)"


def _filtered(records: Iterator[PatientRecord], counts: Counter[str]) -> Iterator[PatientRecord]:
    for rec in records:
        counts["read"] += 1
        age = rec.static.age
        if age is None:
            counts[_AGE_UNKNOWN] += 1
        elif age < MIN_AGE:
            counts[_NOT_ADULT] += 1
            continue
        reason = exclusion_reason(rec.prediction_time, rec.discharge_time, rec.death_time)
        if reason is not None:
            counts[reason] += 1
            continue
        yield rec


def build_fhir_cohort(
    ndjson_dir: Path,
    out: Path,
    *,
    window_hours: int = DEFAULT_WINDOW_HOURS,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Write the cohort folder from an NDJSON export; returns the saved summary."""
    from fhir_adapters.ndjson import NdjsonReport, records_from_ndjson

    if not ndjson_dir.is_dir():
        raise FileNotFoundError(f"FHIR NDJSON folder not found: {ndjson_dir}")
    report = NdjsonReport()
    counts: Counter[str] = Counter()
    from fhir_adapters.imaging import AttachmentSource, CombinedSource, LocalFolderSource

    # Images: DICOM attachments in the resources, else DICOM files beside the export.
    images = CombinedSource([AttachmentSource(), LocalFolderSource(ndjson_dir)])
    records: Iterator[PatientRecord] = records_from_ndjson(
        ndjson_dir, ndjson_report=report, window_hours=window_hours, image_source=images
    )
    if progress:
        from tqdm import tqdm

        records = iter(tqdm(records, desc="admissions", unit="adm"))
    steps: list[dict[str, Any]] = []
    info: dict[str, Any] = {
        "source": f"FHIR NDJSON {ndjson_dir.name}",
        "ndjson_dir": str(ndjson_dir),
        "window_hours": window_hours,
        "steps": steps,
        "split_config": split_config(seed) | {"method": "seeded hash of patient id"},
    }
    summary = write_cohort(
        _filtered(records, counts), out, splits=lambda p: hash_split(p, seed=seed), summary=info
    )
    n = counts["read"]
    adult = n - counts[_NOT_ADULT]
    alive = adult - counts[EXCLUDE_DIED_IN_WINDOW]
    steps += [
        {"name": "inpatient encounters", "count": n, "removed": 0},
        {"name": f"adult (age >= {MIN_AGE:g}; unknown age kept: {counts[_AGE_UNKNOWN]})",
         "count": adult, "removed": counts[_NOT_ADULT]},
        {"name": f"alive at prediction time (admission + {window_hours} h)",
         "count": alive, "removed": counts[EXCLUDE_DIED_IN_WINDOW]},
        {"name": "in hospital at prediction time",
         "count": alive - counts[EXCLUDE_DISCHARGED_IN_WINDOW],
         "removed": counts[EXCLUDE_DISCHARGED_IN_WINDOW]},
    ]  # fmt: skip
    summary["steps"] = steps
    summary["ndjson"] = {"lines": report.lines, "corrupt": report.corrupt}
    import json

    from training.cohort_store import SUMMARY_FILE, SUMMARY_MD_FILE, summary_markdown

    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))
    (out / SUMMARY_MD_FILE).write_text(summary_markdown(summary))
    return summary
