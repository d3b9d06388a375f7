"""MIMIC-IV-Note radiology reports and MIMIC-CXR-JPG studies inside each window.

Notes: only tables other than discharge summaries (see ``layout.find_note_tables``);
a report counts from the time it was stored (``storetime``, else ``charttime``),
because that is when a clinician could read it, and must become available inside
``[admittime, prediction_time)``. CXR: the first frontal study in
``[admittime, prediction_time)`` -- AP first, else PA -- as in the paper.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from training.mimic.layout import csv_source, find_cxr_metadata, resolve_columns

__all__ = ["cxr_image_path", "cxr_query", "notes_query"]

_NOTE_COLUMNS = {
    "subject_id": ("subject_id",),
    "charttime": ("charttime",),
    "storetime": ("storetime",),
    "text": ("text",),
}
_CXR_COLUMNS = {
    "dicom_id": ("dicom_id",),
    "subject_id": ("subject_id",),
    "study_id": ("study_id",),
    "view": ("ViewPosition", "view_position"),
    "date": ("StudyDate",),
    "time": ("StudyTime",),
}


def notes_query(con: duckdb.DuckDBPyConnection, tables: list[tuple[str, Path]], window: str) -> str:
    """SQL: (hadm_id, time, kind, text) of notes available before each prediction time."""
    parts: list[str] = []
    for kind, path in tables:
        c = resolve_columns(con, path, _NOTE_COLUMNS, optional=("storetime",))
        types = {c["subject_id"]: "BIGINT", c["charttime"]: "TIMESTAMP", c["text"]: "VARCHAR"}
        src = csv_source(path, types, extra="max_line_size=50000000")
        store = f"TRY_CAST(n.{c['storetime']} AS TIMESTAMP)" if c["storetime"] else "NULL"
        avail = f"coalesce({store}, n.{c['charttime']})"
        parts.append(
            f"SELECT w.hadm_id, {avail} AS time, '{kind}' AS kind, n.{c['text']} AS text "
            f"FROM {src} n JOIN {window} w ON n.{c['subject_id']} = w.subject_id "
            f"AND {avail} >= w.start_time AND {avail} < w.stop_time"
        )
    return " UNION ALL ".join(parts) + " ORDER BY hadm_id, time, kind, text"


def cxr_query(con: duckdb.DuckDBPyConnection, cxr_dir: Path, window: str) -> str:
    """SQL: the first frontal (AP, else PA) CXR image of each admission's window."""
    meta = find_cxr_metadata(cxr_dir)
    c = resolve_columns(con, meta, _CXR_COLUMNS)
    stamp = (
        f"try_strptime(CAST(m.{c['date']} AS VARCHAR) || "
        f"lpad(split_part(CAST(m.{c['time']} AS VARCHAR), '.', 1), 6, '0'), '%Y%m%d%H%M%S')"
    )
    return (
        f"WITH m AS (SELECT CAST(m.{c['dicom_id']} AS VARCHAR) AS dicom_id, "
        f"CAST(m.{c['subject_id']} AS BIGINT) AS subject_id, "
        f"CAST(m.{c['study_id']} AS VARCHAR) AS study_id, "
        f"upper(trim(CAST(m.{c['view']} AS VARCHAR))) AS view_position, {stamp} AS time "
        f"FROM read_csv('{str(meta).replace(chr(39), chr(39) * 2)}', header=true, "
        f"all_varchar=true) m) "
        f"SELECT w.hadm_id, m.time, m.view_position, m.study_id, m.dicom_id, m.subject_id "
        f"FROM m JOIN {window} w ON m.subject_id = w.subject_id "
        f"AND m.time >= w.start_time AND m.time < w.stop_time "
        f"WHERE m.view_position IN ('AP', 'PA') "
        f"QUALIFY row_number() OVER (PARTITION BY w.hadm_id ORDER BY "
        f"(m.view_position = 'AP') DESC, m.time, m.study_id, m.dicom_id) = 1 "
        f"ORDER BY w.hadm_id"
    )


def cxr_image_path(cxr_dir: Path, subject_id: int, study_id: str, dicom_id: str) -> Path:
    """MIMIC-CXR-JPG layout: ``files/p10/p10000032/s50414267/<dicom_id>.jpg``."""
    base = cxr_dir / "files" if (cxr_dir / "files").is_dir() else cxr_dir
    sid = str(subject_id)
    return base / f"p{sid[:2]}" / f"p{sid}" / f"s{study_id}" / f"{dicom_id}.jpg"
