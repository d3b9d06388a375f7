"""Build a cohort folder from MIMIC-IV (+ MIMIC-IV-Note, MIMIC-CXR-JPG) csv.gz files.

Cohort (paper section 4.1), each step counted in the summary:

1. hospital admissions (``hosp/admissions``);
2. with at least one ICU stay (``icu/icustays.hadm_id``);
3. adults: age at admission >= 18, from the birth date MIMIC implies
   (``training.mimic.demographics.mimic_birth_date``);
   a stay ends at ``dischtime``, or at a later in-hospital ``deathtime``
   (``demographics.stay_end_sql``);
4. alive at the prediction time (``admittime + window``): earlier deaths excluded;
5. still in hospital at the prediction time: earlier discharges excluded
   (rules and labels: ``training.labels``).

Race comes from the patient's admissions up to and including this one (never a later
one). Admissions (tens of thousands of rows) are held in memory; events, notes and images
are streamed from DuckDB in admission order and merged one admission at a time.
DuckDB runs under ``memory_limit`` and spills to ``temp_directory``.
"""

from __future__ import annotations

import tempfile
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from fhir_adapters.notes import clean_note_text
from moe_core.feature_catalog import DEFAULT_SPEC
from moe_core.feature_spec import FeatureSpec
from moe_core.records import DEFAULT_WINDOW_HOURS, ImageRef, Note, PatientRecord, QualityNote
from training.cohort_images import FileImageLoader
from training.cohort_store import write_cohort
from training.labels import exclusion_reason, label_admission
from training.mimic.demographics import (
    DAYS_PER_YEAR,
    mimic_demographics,
    patient_race,
    stay_end_sql,
)
from training.mimic.events import convert_rows, events_query, grouped
from training.mimic.layout import (
    ADMISSIONS,
    CHARTEVENTS,
    ICUSTAYS,
    LABEVENTS,
    PATIENTS,
    csv_source,
    find_note_tables,
    find_table,
    resolve_columns,
)
from training.mimic.sources import cxr_image_path, cxr_query, notes_query
from training.splits import assign_splits, split_config

__all__ = ["MimicCohortConfig", "build_mimic_cohort", "iter_mimic_records", "select_admissions"]

_WINDOW = "cohort_window"  # DuckDB table: subject_id, hadm_id, start_time, stop_time
_ADM_COLS = {
    "subject_id": ("subject_id",),
    "hadm_id": ("hadm_id",),
    "admittime": ("admittime",),
    "dischtime": ("dischtime",),
    "deathtime": ("deathtime",),
    "admission_type": ("admission_type",),
    "discharge_location": ("discharge_location",),
    "race": ("race", "ethnicity"),  # v1.0 called it ethnicity
    "expire": ("hospital_expire_flag",),
}
_PAT_COLS = {
    "subject_id": ("subject_id",),
    "gender": ("gender", "sex"),
    "anchor_age": ("anchor_age",),
    "anchor_year": ("anchor_year",),
}


@dataclass(frozen=True, slots=True)
class MimicCohortConfig:
    """What to read, where to write, and the cohort parameters."""

    mimic_dir: Path
    out: Path
    notes_dir: Path | None = None
    cxr_dir: Path | None = None
    window_hours: int = DEFAULT_WINDOW_HOURS
    seed: int = 0
    min_age: float = 18.0
    memory_limit: str = "8GB"  # DuckDB's cap; full MIMIC-IV builds within 24 GiB
    temp_dir: Path | None = None
    threads: int | None = None
    spec: FeatureSpec = field(default=DEFAULT_SPEC)
    progress: bool = False

    def __post_init__(self) -> None:
        if self.window_hours <= 0:
            raise ValueError(f"window_hours must be positive, got {self.window_hours}")
        if not self.mimic_dir.is_dir():
            raise FileNotFoundError(f"MIMIC-IV folder not found: {self.mimic_dir}")


def _connect(cfg: MimicCohortConfig, temp: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    con.execute(f"SET memory_limit = '{cfg.memory_limit}'")
    con.execute(f"SET temp_directory = '{str(temp).replace(chr(39), chr(39) * 2)}'")
    con.execute("SET preserve_insertion_order = false")
    if cfg.threads:
        con.execute(f"SET threads = {int(cfg.threads)}")
    return con


def _utc(t: datetime | None) -> datetime | None:
    return None if t is None else (t.replace(tzinfo=UTC) if t.tzinfo is None else t)


def _count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    rows = con.execute(sql).fetchall()
    return int(rows[0][0]) if rows else 0


def select_admissions(
    con: duckdb.DuckDBPyConnection, cfg: MimicCohortConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[int, list[datetime]]]:
    """(cohort admissions ordered by hadm_id, counted steps, admit times per subject)."""
    adm_path = find_table(cfg.mimic_dir, ADMISSIONS)
    pat_path = find_table(cfg.mimic_dir, PATIENTS)
    icu_path = find_table(cfg.mimic_dir, ICUSTAYS)
    assert adm_path is not None and pat_path is not None and icu_path is not None
    a = resolve_columns(con, adm_path, _ADM_COLS, optional=("discharge_location",))
    p = resolve_columns(con, pat_path, _PAT_COLS)
    resolve_columns(con, icu_path, {"hadm_id": ("hadm_id",)})
    ts = {a[k]: "TIMESTAMP" for k in ("admittime", "dischtime", "deathtime")}
    disposition = f"a.{a['discharge_location']}" if a["discharge_location"] else "NULL"
    con.execute(
        f"CREATE TABLE adm AS SELECT a.{a['subject_id']} AS subject_id, "
        f"a.{a['hadm_id']} AS hadm_id, a.{a['admittime']} AS admittime, "
        f"{stay_end_sql('a.' + a['dischtime'], 'a.' + a['deathtime'])} AS dischtime, "
        f"a.{a['deathtime']} AS deathtime, "
        f"a.{a['admission_type']} AS admission_type, {disposition} AS discharge_location, "
        f"a.{a['race']} AS race, CAST(a.{a['expire']} AS INTEGER) = 1 AS expire, "
        f"p.{p['gender']} AS gender, "
        f"datediff('day', make_date(CAST(p.{p['anchor_year']} - p.{p['anchor_age']} AS BIGINT), "
        f"1, 1), CAST(a.{a['admittime']} AS DATE)) / {DAYS_PER_YEAR} AS age, "
        f"a.{a['hadm_id']} IN (SELECT hadm_id FROM {csv_source(icu_path)} "
        f"WHERE hadm_id IS NOT NULL) AS has_icu "
        f"FROM {csv_source(adm_path, ts)} a "
        f"LEFT JOIN {csv_source(pat_path)} p ON a.{a['subject_id']} = p.{p['subject_id']}"
    )
    admit_times: dict[int, list[datetime]] = {}
    races: dict[int, list[str | None]] = {}
    for subject, admit, race in con.execute(
        "SELECT subject_id, admittime, race FROM adm ORDER BY subject_id, admittime, hadm_id"
    ).fetchall():
        admit_times.setdefault(int(subject), []).append(admit.replace(tzinfo=UTC))
        races.setdefault(int(subject), []).append(race)

    def race_of(subject: int, admit: datetime) -> str | None:
        """The patient's race as known at this admission: never from a later one."""
        upto = bisect_right(admit_times.get(subject, []), admit)
        return patient_race(races.get(subject, [])[:upto])

    n_all = _count(con, "SELECT count(*) FROM adm")
    rows = (
        con.sql(
            "SELECT * FROM adm WHERE has_icu AND age >= ? ORDER BY hadm_id", params=[cfg.min_age]
        )
        .to_arrow_table()
        .to_pylist()
    )
    n_icu = _count(con, "SELECT count(*) FROM adm WHERE has_icu")
    window = timedelta(hours=cfg.window_hours)
    kept: list[dict[str, Any]] = []
    removed: dict[str, int] = {}
    for row in rows:
        for key in ("admittime", "dischtime", "deathtime"):
            row[key] = _utc(row[key])
        row["race"] = race_of(int(row["subject_id"]), row["admittime"])
        row["prediction_time"] = row["admittime"] + window
        reason = exclusion_reason(
            row["prediction_time"], row["dischtime"], row["deathtime"], row["expire"]
        )
        if reason is None:
            kept.append(row)
        else:
            removed[reason] = removed.get(reason, 0) + 1
    from training.labels import EXCLUDE_DIED_IN_WINDOW, EXCLUDE_DISCHARGED_IN_WINDOW

    died, gone = (
        removed.get(EXCLUDE_DIED_IN_WINDOW, 0),
        removed.get(EXCLUDE_DISCHARGED_IN_WINDOW, 0),
    )
    steps = [
        {"name": "hospital admissions", "count": n_all, "removed": 0},
        {"name": "with an ICU stay", "count": n_icu, "removed": n_all - n_icu},
        {"name": f"adult (age >= {cfg.min_age:g})", "count": len(rows),
         "removed": n_icu - len(rows)},
        {"name": f"alive at prediction time (admission + {cfg.window_hours} h)",
         "count": len(rows) - died, "removed": died},
        {"name": "in hospital at prediction time", "count": len(kept), "removed": gone},
    ]  # fmt: skip
    return kept, steps, admit_times


def _stream(con: duckdb.DuckDBPyConnection, sql: str) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    cur = con.cursor()  # its own result set: several streams are merged side by side
    return grouped(cur.sql(sql).to_arrow_reader(8192))


class _Merge:
    """Takes the rows of the next admission from a stream ordered by hadm_id."""

    def __init__(self, stream: Iterator[tuple[int, list[dict[str, Any]]]] | None) -> None:
        self._it = stream
        self._head = next(stream, None) if stream is not None else None

    def take(self, hadm: int) -> list[dict[str, Any]]:
        while self._head is not None and self._it is not None and self._head[0] < hadm:
            self._head = next(self._it, None)
        if self._head is not None and self._head[0] == hadm:
            rows = self._head[1]
            self._head = next(self._it, None) if self._it is not None else None
            return rows
        return []


def iter_mimic_records(
    con: duckdb.DuckDBPyConnection,
    cfg: MimicCohortConfig,
    cohort: list[dict[str, Any]],
    admit_times: dict[int, list[datetime]],
) -> Iterator[PatientRecord]:
    """One ``PatientRecord`` per cohort admission, in ``hadm_id`` order (streamed)."""
    naive = pa.timestamp("us")
    window = pa.table(
        {
            "subject_id": pa.array([r["subject_id"] for r in cohort], pa.int64()),
            "hadm_id": pa.array([r["hadm_id"] for r in cohort], pa.int64()),
            "start_time": pa.array([r["admittime"].replace(tzinfo=None) for r in cohort], naive),
            "stop_time": pa.array(
                [r["prediction_time"].replace(tzinfo=None) for r in cohort], naive
            ),
        }
    )
    con.register("_window_arrow", window)
    con.execute(f"CREATE OR REPLACE TABLE {_WINDOW} AS SELECT * FROM _window_arrow")
    con.unregister("_window_arrow")
    tables = [(name, find_table(cfg.mimic_dir, t)) for name, t in
              (("chartevents", CHARTEVENTS), ("labevents", LABEVENTS))]  # fmt: skip
    events = _Merge(
        _stream(
            con, events_query(con, [(n, p) for n, p in tables if p is not None], cfg.spec, _WINDOW)
        )
    )
    notes = _Merge(
        _stream(con, notes_query(con, find_note_tables(cfg.notes_dir), _WINDOW))
        if cfg.notes_dir is not None else None
    )  # fmt: skip
    images = _Merge(
        _stream(con, cxr_query(con, cfg.cxr_dir, _WINDOW)) if cfg.cxr_dir is not None else None
    )
    by_itemid = cfg.spec.by_itemid()
    for row in cohort:
        hadm = int(row["hadm_id"])
        converted = convert_rows(events.take(hadm), by_itemid)
        record = PatientRecord(
            patient_id=str(row["subject_id"]),
            encounter_id=str(hadm),
            anchor_time=row["admittime"],
            prediction_time=row["prediction_time"],
            static=mimic_demographics(
                row["age"], row["gender"], row["race"], row["admission_type"]
            ),
            events=converted.events,
            notes=[
                Note(_utc(n["time"]), n["kind"], clean_note_text(n["text"]))  # type: ignore[arg-type]
                for n in notes.take(hadm)
            ],
            quality=converted.quality,
            discharge_time=row["dischtime"],
            death_time=row["deathtime"],
            discharge_disposition=row["discharge_location"],
            encounter_class="inpatient",
            labels=label_admission(
                anchor_time=row["admittime"],
                prediction_time=row["prediction_time"],
                discharge_time=row["dischtime"],
                death_time=row["deathtime"],
                expire_flag=row["expire"],
                other_admissions=[
                    t for t in admit_times.get(int(row["subject_id"]), []) if t != row["admittime"]
                ],
            ),
        )
        _attach_image(record, images.take(hadm), cfg.cxr_dir)
        yield record


def _attach_image(record: PatientRecord, rows: list[dict[str, Any]], cxr_dir: Path | None) -> None:
    for img in rows:
        assert cxr_dir is not None
        path = cxr_image_path(cxr_dir, int(img["subject_id"]), img["study_id"], img["dicom_id"])
        if not path.is_file():
            record.quality.append(
                QualityNote(f"mimic-cxr study {img['study_id']}", "image file missing", path.name)
            )
            continue
        record.images.append(
            ImageRef(
                time=_utc(img["time"]),  # type: ignore[arg-type]
                view_position=img["view_position"],
                study_id=str(img["study_id"]),
                loader=FileImageLoader(path),
                content_key=f"mimic-cxr-jpg/{img['dicom_id']}",
            )
        )


def build_mimic_cohort(cfg: MimicCohortConfig) -> dict[str, Any]:
    """Select, label, extract and write the cohort; returns the saved summary."""
    with tempfile.TemporaryDirectory(dir=cfg.temp_dir, prefix="moe-duckdb-") as temp:
        con = _connect(cfg, Path(temp))
        try:
            cohort, steps, admit_times = select_admissions(con, cfg)
            splits = assign_splits((str(r["subject_id"]) for r in cohort), seed=cfg.seed)
            records: Iterator[PatientRecord] = iter_mimic_records(con, cfg, cohort, admit_times)
            if cfg.progress:
                from tqdm import tqdm

                records = iter(tqdm(records, total=len(cohort), desc="admissions", unit="adm"))
            info = {
                "source": "MIMIC-IV",
                "mimic_dir": str(cfg.mimic_dir),
                "notes_dir": str(cfg.notes_dir) if cfg.notes_dir else None,
                "cxr_dir": str(cfg.cxr_dir) if cfg.cxr_dir else None,
                "window_hours": cfg.window_hours,
                "spec_version": cfg.spec.version,
                "steps": steps,
                "split_config": split_config(cfg.seed),
            }
            return write_cohort(records, cfg.out, splits=splits, summary=info)
        finally:
            con.close()
