"""``moe-health`` subcommands owned by the FHIR adapters.

Thin typer commands; the adapters are imported inside the command bodies so
``moe-health --help`` stays fast. ``register(app)`` adds them to the main app.
"""

from __future__ import annotations

import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

__all__ = ["register"]


def _summary(record: Any) -> dict[str, Any]:
    from moe_core.modalities import pattern_name

    return {
        "patient_id": record.patient_id,
        "encounter_id": record.encounter_id,
        "anchor_time": record.anchor_time.isoformat(),
        "prediction_time": record.prediction_time.isoformat(),
        "static": {
            "age": None if record.static.age is None else round(record.static.age, 2),
            "sex": record.static.sex,
            "race": record.static.race,
            "ethnicity": record.static.ethnicity,
            "admission_type": record.static.admission_type,
        },
        "events": dict(sorted(Counter(e.code for e in record.events).items())),
        "notes": len(record.notes),
        "images": len(record.images),
        "present": pattern_name(record.present),
        "labels": {
            "mortality": record.labels.mortality,
            "long_los": record.labels.long_los,
            "readmission": record.labels.readmission,
        },
        "quality": dict(Counter(q.reason for q in record.quality)),
    }


def fhir_records(
    ndjson: Path | None = typer.Option(
        None,
        "--ndjson",
        help="A FHIR Bulk Data export folder (*.ndjson / *.ndjson.gz, one file per resource "
        "type or mixed). Read with bounded memory, grouped by patient.",
    ),
    server: str | None = typer.Option(
        None,
        "--server",
        help="FHIR R4 base URL (e.g. http://127.0.0.1:8080/fhir) to fetch one patient from; "
        "needs --patient.",
    ),
    patient: str | None = typer.Option(
        None,
        "--patient",
        help="Patient id on --server: the Patient and its Encounter, "
        "Observation, DocumentReference, DiagnosticReport and ImagingStudy resources are read.",
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="FHIR_TOKEN",
        help="Bearer token for --server (or the FHIR_TOKEN environment variable).",
    ),
    prediction_time: datetime | None = typer.Option(
        None,
        "--prediction-time",
        help="'Now' for the records (ISO 8601, timezone-aware; UTC assumed without an "
        "offset). Default: admission start + --window-hours, the training setting.",
    ),
    window_hours: int = typer.Option(
        48, "--window-hours", min=1, help="Observation window after admission start, hours."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write one JSON summary line per record here (default stdout)."
    ),
) -> None:
    """Build PatientRecords from FHIR data and print one JSON summary line per admission.

    A debugging view of what the model would see: per admission, the demographics, the
    number of events per feature, notes and images inside the window, the modality
    pattern (E/T/I), the labels and the quality notes (what was dropped and why).
    """
    from datetime import UTC

    import orjson

    from fhir_adapters.client import FhirClient
    from fhir_adapters.ndjson import NdjsonReport, records_from_ndjson
    from fhir_adapters.record import build_records

    if (ndjson is None) == (server is None):
        raise typer.BadParameter("give exactly one of --ndjson or --server")
    if prediction_time is not None and prediction_time.tzinfo is None:
        prediction_time = prediction_time.replace(tzinfo=UTC)
    kw: dict[str, Any] = {"prediction_time": prediction_time, "window_hours": window_hours}
    report = NdjsonReport()
    if ndjson is not None:
        if not ndjson.is_dir():
            raise typer.BadParameter(f"{ndjson} is not a folder", param_hint="--ndjson")
        records: Any = records_from_ndjson(ndjson, ndjson_report=report, **kw)
    else:
        if not patient:
            raise typer.BadParameter("--server needs --patient")
        assert server is not None
        with FhirClient(server, auth=token) as client:
            records = build_records(
                client.patient_resources(patient), binary_resolver=client.binary, **kw
            )
    sink = out.open("wb") if out is not None else sys.stdout.buffer
    try:
        n = 0
        for record in records:
            sink.write(orjson.dumps(_summary(record)) + b"\n")
            n += 1
    finally:
        if out is not None:
            sink.close()
    if ndjson is not None:
        typer.echo(
            f"{n} records; {report.lines} lines, {report.corrupt} corrupt, "
            f"{sum(report.skipped_types.values())} of unused types",
            err=True,
        )


def export_fhir(
    mimic_dir: Path = typer.Option(
        ...,
        "--mimic-dir",
        help="MIMIC-IV folder (hosp/ and icu/ csv.gz, v2.2 or later) to export. Every patient "
        "and hospital admission is written; Observations for the chartevents/labevents items "
        "the feature spec knows.",
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="Output folder: Patient, Encounter, Observation (and DocumentReference, "
        "ImagingStudy) .ndjson files and a Bulk-style manifest.json.",
    ),
    notes_dir: Path | None = typer.Option(
        None,
        "--notes-dir",
        help="MIMIC-IV-Note folder: every note becomes a DocumentReference (discharge "
        "summaries typed LOINC 18842-5, so readers can exclude them).",
    ),
    cxr_dir: Path | None = typer.Option(
        None,
        "--cxr-dir",
        help="MIMIC-CXR-JPG folder (metadata csv + files/): one ImagingStudy per study with "
        "each image's view position and JPG path.",
    ),
    gzip_output: bool = typer.Option(
        False, "--gzip/--no-gzip", help="Write .ndjson.gz instead of plain .ndjson."
    ),
    memory_limit: str = typer.Option(
        "8GB", "--memory-limit", help="DuckDB memory cap; larger sorts spill to a temp folder."
    ),
) -> None:
    """Export MIMIC-IV as FHIR R4 Bulk Data NDJSON, straight from the raw csv.gz rows.

    Observations carry the feature's LOINC code and the MIMIC itemid coding, with values
    in the original MIMIC units (valueuom as UCUM), so reading the export back through
    the FHIR adapters converts units exactly as a hospital feed would.
    """
    from fhir_adapters.mimic_export import MimicExportConfig, export_mimic_fhir

    counts = export_mimic_fhir(
        MimicExportConfig(
            mimic_dir=mimic_dir,
            out=out,
            notes_dir=notes_dir,
            cxr_dir=cxr_dir,
            gzip=gzip_output,
            memory_limit=memory_limit,
        )
    )
    for rtype, n in sorted(counts.items()):
        typer.echo(f"{rtype}: {n}")
    typer.echo(f"export written to {out}")


def register(app: typer.Typer) -> None:
    """Add the FHIR adapter commands to the ``moe-health`` app."""
    app.command("fhir-records")(fhir_records)
    app.command("export-fhir")(export_fhir)
