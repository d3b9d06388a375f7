"""The on-disk cohort format: what every source writes and training reads.

A cohort is a folder::

    admissions.parquet   one row per admission (ids, times, statics, labels, split)
    events.parquet       encounter_id, time, code, value   (canonical units)
    notes.parquet        encounter_id, time, kind, text
    images.parquet       encounter_id, time, view_position, study_id, uri, content_key
    quality.parquet      encounter_id, source, reason, detail   (what was dropped, why)
    splits.json          patient_id -> "train" | "val" | "test" (+ seed, fractions)
    summary.json/.md     counts per step, label rates, modality availability

Rows of the child tables are written in the same encounter order as
``admissions.parquet`` (each encounter's rows contiguous), so reading back is a
single streaming merge: neither side ever holds the whole cohort. Images are
stored as references (a file path or URI) and come back as ``ImageRef`` with a
lazy loader; images that only exist in memory (or behind a loader that is not a
file) are saved losslessly as compressed ``.npz`` files under ``images/``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from moe_core.modalities import AVAILABILITY_PATTERNS, TASKS, pattern_name
from moe_core.records import (
    Demographics,
    Event,
    ImageRef,
    Labels,
    Note,
    PatientRecord,
    QualityNote,
)
from training.cohort_images import FileImageLoader

__all__ = [
    "ADMISSIONS_FILE",
    "COHORT_FORMAT_VERSION",
    "EVENTS_FILE",
    "IMAGES_FILE",
    "NOTES_FILE",
    "QUALITY_FILE",
    "SPLITS_FILE",
    "SUMMARY_FILE",
    "SUMMARY_MD_FILE",
    "CohortFormatError",
    "read_admissions",
    "read_records",
    "read_summary",
    "summary_markdown",
    "write_cohort",
]

COHORT_FORMAT_VERSION = "1"
ADMISSIONS_FILE = "admissions.parquet"
EVENTS_FILE = "events.parquet"
NOTES_FILE = "notes.parquet"
IMAGES_FILE = "images.parquet"
QUALITY_FILE = "quality.parquet"
SPLITS_FILE = "splits.json"
SUMMARY_FILE = "summary.json"
SUMMARY_MD_FILE = "summary.md"
_IMAGE_ARRAY_DIR = "images"

_TS = pa.timestamp("us", tz="UTC")

ADMISSIONS_SCHEMA = pa.schema(
    [
        ("patient_id", pa.string()),
        ("encounter_id", pa.string()),
        ("anchor_time", _TS),
        ("prediction_time", _TS),
        ("age", pa.float64()),
        ("sex", pa.string()),
        ("race", pa.string()),
        ("ethnicity", pa.string()),
        ("admission_type", pa.string()),
        ("discharge_time", _TS),
        ("death_time", _TS),
        ("discharge_disposition", pa.string()),
        ("encounter_class", pa.string()),
        *((t.key, pa.bool_()) for t in TASKS),  # nullable: None = label unknown
        ("split", pa.string()),
        ("has_ehr", pa.bool_()),
        ("has_text", pa.bool_()),
        ("has_image", pa.bool_()),
    ]
)
EVENTS_SCHEMA = pa.schema(
    [("encounter_id", pa.string()), ("time", _TS), ("code", pa.string()), ("value", pa.float64())]
)
NOTES_SCHEMA = pa.schema(
    [("encounter_id", pa.string()), ("time", _TS), ("kind", pa.string()), ("text", pa.string())]
)
IMAGES_SCHEMA = pa.schema(
    [
        ("encounter_id", pa.string()),
        ("time", _TS),
        ("view_position", pa.string()),
        ("study_id", pa.string()),
        ("uri", pa.string()),
        ("content_key", pa.string()),
    ]
)
QUALITY_SCHEMA = pa.schema(
    [
        ("encounter_id", pa.string()),
        ("source", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)
_TABLES: dict[str, pa.Schema] = {
    ADMISSIONS_FILE: ADMISSIONS_SCHEMA,
    EVENTS_FILE: EVENTS_SCHEMA,
    NOTES_FILE: NOTES_SCHEMA,
    IMAGES_FILE: IMAGES_SCHEMA,
    QUALITY_FILE: QUALITY_SCHEMA,
}


class CohortFormatError(ValueError):
    """A cohort folder is missing a file or holds something this version cannot read."""


SplitAssignment = Mapping[str, str] | Callable[[str], str]


class _TableSink:
    """Buffers rows as columns and flushes them as Parquet row groups."""

    def __init__(self, path: Path, schema: pa.Schema, batch_rows: int) -> None:
        self.schema = schema
        self.batch_rows = batch_rows
        self.columns: dict[str, list[Any]] = {n: [] for n in schema.names}
        self.writer = pq.ParquetWriter(path, schema, compression="zstd")
        self.rows = 0

    def add(self, row: Mapping[str, Any]) -> None:
        for name, col in self.columns.items():
            col.append(row[name])
        self.rows += 1
        if len(self.columns[self.schema.names[0]]) >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        if not self.columns[self.schema.names[0]]:
            return
        table = pa.table(self.columns, schema=self.schema)
        self.writer.write_table(table)
        for col in self.columns.values():
            col.clear()

    def close(self) -> None:
        self.flush()
        self.writer.close()


def _split_of(splits: SplitAssignment, patient_id: str) -> str:
    if callable(splits):
        return splits(patient_id)
    try:
        return splits[patient_id]
    except KeyError as exc:
        raise CohortFormatError(f"patient {patient_id} has no split assignment") from exc


def _image_uri(img: ImageRef, folder: Path, encounter_id: str, n: int) -> str:
    """Where the image's pixels live; other pixels are saved as compressed ``.npz``."""
    if isinstance(img.loader, FileImageLoader):
        return str(img.loader.path)
    pixels = img.load()  # a foreign loader or pixels: materialise once, keep a file copy
    digest = hashlib.sha256(f"{encounter_id}/{img.study_id}/{n}".encode()).hexdigest()[:20]
    out = folder / _IMAGE_ARRAY_DIR / f"{digest}.npz"
    out.parent.mkdir(exist_ok=True)
    np.savez_compressed(out, pixels=np.asarray(pixels, dtype=np.float32))  # lossless
    return f"{_IMAGE_ARRAY_DIR}/{digest}.npz"


def _empty_stats() -> dict[str, Any]:
    return {
        "admissions": 0,
        "patients": set(),
        "splits": {},
        "labels": {t.key: {"positive": 0, "negative": 0, "unknown": 0} for t in TASKS},
        "patterns": {pattern_name(p): 0 for p in AVAILABILITY_PATTERNS} | {"none": 0},
        "modality": {"ehr": 0, "text": 0, "image": 0},
        "events": 0,
        "notes": 0,
        "images": 0,
        "quality": {},
    }


def write_cohort(
    records: Iterable[PatientRecord],
    folder: Path | str,
    *,
    splits: SplitAssignment,
    summary: Mapping[str, Any] | None = None,
    batch_rows: int = 65_536,
) -> dict[str, Any]:
    """Stream ``records`` into a cohort folder; returns the summary that was saved.

    ``splits`` maps a patient id to its split (a mapping, or a function for
    streaming sources). ``summary`` is source-specific information (counts per
    cohort-building step, exclusions, the source) merged into ``summary.json``;
    label rates and modality availability per combination are computed here.
    Records are written in the order given and never held all at once.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    sinks = {name: _TableSink(out / name, schema, batch_rows) for name, schema in _TABLES.items()}
    stats = _empty_stats()
    split_map: dict[str, str] = {}
    try:
        for rec in records:
            split = _split_of(splits, rec.patient_id)
            split_map[rec.patient_id] = split
            _write_record(rec, split, sinks, out, stats)
    finally:
        for sink in sinks.values():
            sink.close()
    splits_doc: dict[str, Any] = {"patients": dict(sorted(split_map.items()))}
    if summary is not None and isinstance(summary.get("split_config"), Mapping):
        splits_doc.update(summary["split_config"])
    (out / SPLITS_FILE).write_text(json.dumps(splits_doc, indent=1))
    saved = _finish_summary(stats, summary or {})
    (out / SUMMARY_FILE).write_text(json.dumps(saved, indent=2, default=str))
    (out / SUMMARY_MD_FILE).write_text(summary_markdown(saved))
    return saved


def _write_record(
    rec: PatientRecord,
    split: str,
    sinks: Mapping[str, _TableSink],
    folder: Path,
    stats: dict[str, Any],
) -> None:
    present = rec.present
    enc = rec.encounter_id
    s = rec.static
    row: dict[str, Any] = {
        "patient_id": rec.patient_id,
        "encounter_id": enc,
        "anchor_time": rec.anchor_time,
        "prediction_time": rec.prediction_time,
        "age": s.age,
        "sex": s.sex,
        "race": s.race,
        "ethnicity": s.ethnicity,
        "admission_type": s.admission_type,
        "discharge_time": rec.discharge_time,
        "death_time": rec.death_time,
        "discharge_disposition": rec.discharge_disposition,
        "encounter_class": rec.encounter_class,
        "split": split,
        "has_ehr": present[0],
        "has_text": present[1],
        "has_image": present[2],
    }
    for task, value in zip(TASKS, rec.labels.as_list(), strict=True):
        row[task.key] = value
        bucket = "unknown" if value is None else ("positive" if value else "negative")
        stats["labels"][task.key][bucket] += 1
    sinks[ADMISSIONS_FILE].add(row)
    for ev in rec.events:
        sinks[EVENTS_FILE].add(
            {"encounter_id": enc, "time": ev.time, "code": ev.code, "value": ev.value}
        )
    for note in rec.notes:
        sinks[NOTES_FILE].add(
            {"encounter_id": enc, "time": note.time, "kind": note.kind, "text": note.text}
        )
    for n, img in enumerate(rec.images):
        sinks[IMAGES_FILE].add(
            {
                "encounter_id": enc,
                "time": img.time,
                "view_position": img.view_position,
                "study_id": img.study_id,
                "uri": _image_uri(img, folder, enc, n),
                "content_key": img.content_key,
            }
        )
    for q in rec.quality:
        sinks[QUALITY_FILE].add(
            {"encounter_id": enc, "source": q.source, "reason": q.reason, "detail": q.detail}
        )
        stats["quality"][q.reason] = stats["quality"].get(q.reason, 0) + 1
    stats["admissions"] += 1
    stats["patients"].add(rec.patient_id)
    stats["splits"][split] = stats["splits"].get(split, 0) + 1
    stats["patterns"][pattern_name(present)] += 1
    for key, on in zip(("ehr", "text", "image"), present, strict=True):
        stats["modality"][key] += int(on)
    stats["events"] += len(rec.events)
    stats["notes"] += len(rec.notes)
    stats["images"] += len(rec.images)


def _finish_summary(stats: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    n = stats["admissions"]
    labels: dict[str, Any] = {}
    for key, c in stats["labels"].items():
        known = c["positive"] + c["negative"]
        labels[key] = c | {"rate": (c["positive"] / known) if known else None}
    out: dict[str, Any] = {
        "format_version": COHORT_FORMAT_VERSION,
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **{k: v for k, v in extra.items() if k != "split_config"},
        "admissions": n,
        "patients": len(stats["patients"]),
        "splits": dict(sorted(stats["splits"].items())),
        "labels": labels,
        "modality_available": stats["modality"],
        "availability_patterns": stats["patterns"],
        "rows": {"events": stats["events"], "notes": stats["notes"], "images": stats["images"]},
        "quality": dict(sorted(stats["quality"].items())),
    }
    return out


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """The saved summary as a short Markdown report (steps, labels, availability)."""
    lines = [f"# Cohort summary ({summary.get('source', 'unknown source')})", ""]
    steps = summary.get("steps")
    if isinstance(steps, list) and steps:
        lines += [
            "## Cohort construction",
            "",
            "| step | admissions | removed |",
            "| --- | ---: | ---: |",
        ]
        for step in steps:
            lines.append(f"| {step['name']} | {step['count']} | {step.get('removed', '')} |")
        lines.append("")
    n = int(summary.get("admissions", 0))
    lines += [
        f"Admissions: {n}; patients: {summary.get('patients', 0)}; "
        f"splits: {summary.get('splits', {})}",
        "",
        "## Labels",
        "",
        "| task | positive | negative | unknown | rate |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for key, c in summary.get("labels", {}).items():
        rate = "" if c["rate"] is None else f"{c['rate']:.3f}"
        lines.append(f"| {key} | {c['positive']} | {c['negative']} | {c['unknown']} | {rate} |")
    lines += [
        "",
        "## Modality availability per combination",
        "",
        "| combination | admissions | share |",
        "| --- | ---: | ---: |",
    ]
    for name, count in summary.get("availability_patterns", {}).items():
        share = f"{count / n:.1%}" if n else ""
        lines.append(f"| {name} | {count} | {share} |")
    quality = summary.get("quality", {})
    if quality:
        lines += ["", "## Dropped values", "", "| reason | count |", "| --- | ---: |"]
        lines += [f"| {r} | {c} |" for r, c in quality.items()]
    return "\n".join(lines) + "\n"


def _require(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise CohortFormatError(f"{folder} is not a cohort folder: {name} is missing")
    return path


def read_admissions(folder: Path | str) -> pa.Table:
    """The admissions table (one row per admission) as a pyarrow Table."""
    return pq.read_table(_require(Path(folder), ADMISSIONS_FILE))


def read_summary(folder: Path | str) -> dict[str, Any]:
    """The saved ``summary.json``."""
    data: dict[str, Any] = json.loads(_require(Path(folder), SUMMARY_FILE).read_text())
    return data


def _grouped_rows(path: Path) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(encounter_id, rows) runs of a child table, streamed batch by batch."""
    current: str | None = None
    rows: list[dict[str, Any]] = []
    for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536):
        for row in batch.to_pylist():
            enc = row["encounter_id"]
            if enc != current:
                if current is not None:
                    yield current, rows
                current, rows = enc, []
            rows.append(row)
    if current is not None:
        yield current, rows


class _ChildCursor:
    """Hands out a child table's rows for encounters requested in file order."""

    def __init__(self, path: Path) -> None:
        self._it = _grouped_rows(path) if path.is_file() else iter(())
        self._head: tuple[str, list[dict[str, Any]]] | None = next(self._it, None)

    def take(self, encounter_id: str) -> list[dict[str, Any]]:
        if self._head is not None and self._head[0] == encounter_id:
            rows = self._head[1]
            self._head = next(self._it, None)
            return rows
        return []


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _image_ref(row: Mapping[str, Any], folder: Path) -> ImageRef:
    uri = str(row["uri"])
    path = Path(uri)
    if not path.is_absolute() and "://" not in uri:
        path = folder / path
    loader: Callable[[], npt.NDArray[np.float32]] = FileImageLoader(path)
    return ImageRef(
        time=_utc(row["time"]) or datetime.min.replace(tzinfo=UTC),
        view_position=str(row["view_position"]),
        study_id=str(row["study_id"]),
        loader=loader,
        content_key=row["content_key"],
    )


def read_records(folder: Path | str, split: str | None = None) -> Iterator[PatientRecord]:
    """Stream the cohort back as ``PatientRecord`` objects (optionally one split only)."""
    root = Path(folder)
    adm_file = pq.ParquetFile(_require(root, ADMISSIONS_FILE))
    cursors = {
        name: _ChildCursor(root / name)
        for name in (EVENTS_FILE, NOTES_FILE, IMAGES_FILE, QUALITY_FILE)
    }
    for batch in adm_file.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            enc = row["encounter_id"]
            children = {name: cur.take(enc) for name, cur in cursors.items()}
            if split is not None and row["split"] != split:
                continue
            yield _record_from_rows(row, children, root)


def _record_from_rows(
    row: Mapping[str, Any], children: Mapping[str, list[dict[str, Any]]], root: Path
) -> PatientRecord:
    anchor = _utc(row["anchor_time"])
    prediction = _utc(row["prediction_time"])
    if anchor is None or prediction is None:
        raise CohortFormatError(f"admission {row['encounter_id']} has no anchor/prediction time")
    return PatientRecord(
        patient_id=row["patient_id"],
        encounter_id=row["encounter_id"],
        anchor_time=anchor,
        prediction_time=prediction,
        static=Demographics(
            age=row["age"],
            sex=row["sex"],
            race=row["race"],
            ethnicity=row["ethnicity"],
            admission_type=row["admission_type"],
        ),
        events=[
            Event(time=_utc(e["time"]), code=e["code"], value=e["value"])  # type: ignore[arg-type]
            for e in children[EVENTS_FILE]
        ],
        notes=[
            Note(time=_utc(n["time"]), kind=n["kind"], text=n["text"])  # type: ignore[arg-type]
            for n in children[NOTES_FILE]
        ],
        images=[_image_ref(i, root) for i in children[IMAGES_FILE]],
        quality=[
            QualityNote(source=q["source"], reason=q["reason"], detail=q["detail"] or "")
            for q in children[QUALITY_FILE]
        ],
        discharge_time=_utc(row["discharge_time"]),
        death_time=_utc(row["death_time"]),
        discharge_disposition=row["discharge_disposition"],
        encounter_class=row["encounter_class"],
        labels=Labels(**{t.key: row[t.key] for t in TASKS}),
    )
