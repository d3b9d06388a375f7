"""Builds the demo page's patients (``cds_hooks/demo/patients.json``) from a synthetic cohort.

Rebuild::

    moe-health synth --patients 40 --seed 1 --out /tmp/demo-cohort
    python -m cds_hooks.demo_patients --cohort /tmp/demo-cohort --out cds_hooks/demo/patients.json

One patient per availability pattern (E, T, I, E+T, E+I, T+I, E+T+I). The generator
always writes vitals/labs (as in the paper's cohort), so the three patterns without EHR
are made from other synthetic patients by leaving their Observations out of the
prefetch: exactly what an EHR without charted vitals would send. Each patient's
``prefetch`` holds what the service's prefetch templates ask for; a chest X-ray travels
as a DICOM attachment (``application/dicom``) in a DocumentReference of the study.
"""

from __future__ import annotations

import argparse
import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from cds_hooks.services import PrefetchKey
from moe_core.modalities import AVAILABILITY_PATTERNS, pattern_name

__all__ = ["DemoCandidate", "build_demo_patients", "candidates"]

Resource = dict[str, Any]


@dataclass(slots=True)
class DemoCandidate:
    """One synthetic admission with the modalities it has in its 48 h window."""

    patient_id: str
    encounter_id: str
    has: tuple[bool, bool, bool]  # (EHR, TEXT, IMAGE) as generated
    resources: list[Resource]


def _bundle(resources: list[Resource]) -> Resource:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"resource": r} for r in resources],
    }


def candidates(cohort: Path) -> Iterator[DemoCandidate]:
    """Admissions of a synthetic NDJSON cohort, with their generated modalities."""
    from fhir_adapters.ndjson import group_by_patient
    from fhir_adapters.record import build_patient_records

    for pid, resources in group_by_patient(cohort, types=_TYPES):
        for record in build_patient_records(pid, resources):
            ref = f"Encounter/{record.encounter_id}"
            studies = [
                r for r in resources
                if r.get("resourceType") == "ImagingStudy"
                and (r.get("encounter") or {}).get("reference") == ref
            ]
            has = (bool(record.events), bool(record.notes), bool(studies))
            yield DemoCandidate(pid, record.encounter_id, has, resources)
            break  # the first admission is the one the demo shows


_TYPES = ("Patient", "Encounter", "Observation", "DocumentReference", "ImagingStudy")


def _small_dicom(path: Path, side: int = 160) -> bytes:
    """The same image re-encoded small (about ``side`` pixels, 8-bit JPEG) for the demo."""
    import io

    import numpy as np
    import pydicom

    from fhir_adapters.imaging.synthetic import CxrDicomSpec, Encoding, build_cxr_dataset

    ds = pydicom.dcmread(path)
    px = ds.pixel_array.astype(np.float64)
    step = max(1, max(px.shape) // side)
    px = px[::step, ::step]
    lo, hi = float(px.min()), float(px.max())
    px8 = ((px - lo) / max(hi - lo, 1e-6) * 255.0).round().astype(np.uint8)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        px8 = 255 - px8
    from datetime import UTC, datetime

    when = datetime.strptime(f"{ds.AcquisitionDate}{str(ds.AcquisitionTime)[:6]}", "%Y%m%d%H%M%S")
    spec = CxrDicomSpec(
        view_position=str(ds.get("ViewPosition", "")),
        acquired_at=when.replace(tzinfo=UTC),
        modality=str(ds.get("Modality", "DX")),
        encoding=Encoding.JPEG_BASELINE,
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        sop_uid=str(ds.SOPInstanceUID),
        series_description=str(ds.get("SeriesDescription", "")),
    )
    buf = io.BytesIO()
    build_cxr_dataset(px8, spec).save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _dicom_document(study: Resource, cohort: Path) -> Resource | None:
    """The study's first instance as a DICOM attachment (what a PACS-less EHR can send)."""
    import pydicom

    root = cohort  # the generator's Endpoint addresses a folder inside the export
    files = [
        (series, found)
        for series in study.get("series", ())
        for inst in series.get("instance", ())
        for found in root.rglob(f"{inst['uid']}.dcm")
    ]
    # the model reads the first frontal view: ship that one
    files.sort(key=lambda sf: str(pydicom.dcmread(sf[1], stop_before_pixels=True)
                                  .get("ViewPosition", "")) not in ("AP", "PA"))
    for series, found in files[:1]:
        data = _small_dicom(found)
        return {
            "resourceType": "DocumentReference",
            "id": f"{study['id']}-dicom",
            "status": "current",
            "type": {"text": "Chest X-ray (DICOM)"},
            "subject": study["subject"],
            "date": study.get("started"),
            "context": {
                "encounter": [study["encounter"]] if study.get("encounter") else [],
                "related": [{"reference": f"ImagingStudy/{study['id']}"}],
            },
            "content": [
                {
                    "attachment": {
                        "contentType": "application/dicom",
                        "data": base64.b64encode(data).decode(),
                        "title": series.get("description", "chest X-ray"),
                    }
                }
            ],
        }
    return None


def _prefetch(c: DemoCandidate, ehr: bool, cohort: Path) -> Resource:
    by_type: dict[str, list[Resource]] = {}
    for r in c.resources:
        by_type.setdefault(str(r["resourceType"]), []).append(r)
    encounter = [e for e in by_type.get("Encounter", []) if e["id"] == c.encounter_id]
    studies = [
        s for s in by_type.get("ImagingStudy", [])
        if (s.get("encounter") or {}).get("reference") == f"Encounter/{c.encounter_id}"
    ][:1]
    documents = list(by_type.get("DocumentReference", []))
    for s in studies:
        doc = _dicom_document(s, cohort)
        if doc is not None:
            documents.append(doc)
    return {
        PrefetchKey.PATIENT.value: by_type["Patient"][0],
        PrefetchKey.ENCOUNTER.value: _bundle(encounter),
        PrefetchKey.OBSERVATIONS.value: _bundle(by_type.get("Observation", []) if ehr else []),
        PrefetchKey.DOCUMENTS.value: _bundle(documents),
        PrefetchKey.IMAGING.value: _bundle(studies),
    }


def build_demo_patients(cohort: Path) -> list[Resource]:
    """One demo patient per availability pattern, in ``AVAILABILITY_PATTERNS`` order."""
    pool = list(candidates(cohort))
    used: set[str] = set()
    out: list[Resource] = []
    for pattern in AVAILABILITY_PATTERNS:
        want_ehr, want_text, want_image = pattern
        # a donor with the same notes/image availability (EHR is dropped when unwanted)
        donor = next(
            (
                c for c in pool
                if c.patient_id not in used and c.has[0]
                and c.has[1] == want_text and c.has[2] == want_image
            ),
            None,
        )
        if donor is None:
            raise ValueError(f"the cohort has no admission for pattern {pattern_name(pattern)}")
        used.add(donor.patient_id)
        name = pattern_name(pattern)
        out.append(
            {
                "id": f"demo-{name.replace('+', '')}".lower(),
                "label": f"Synthetic patient {len(out) + 1}",
                "pattern": name,
                "patientId": donor.patient_id,
                "encounterId": donor.encounter_id,
                "prefetch": _prefetch(donor, want_ehr, cohort),
            }
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cohort", type=Path, required=True, help="moe-health synth output")
    parser.add_argument("--out", type=Path, required=True, help="patients.json to write")
    args = parser.parse_args(argv)
    patients = build_demo_patients(args.cohort)
    args.out.write_bytes(orjson.dumps(patients))
    print(f"wrote {len(patients)} demo patients to {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
