"""chartevents + labevents -> ``Event`` rows, filtered and windowed inside DuckDB.

Only itemids of the feature spec are read, and only rows inside an admission's
window ``[admittime, prediction_time)`` (joined on subject and time, so rows whose
``hadm_id`` is blank still land in their admission). Lab results count only once they
are known: ``coalesce(storetime, charttime) < prediction_time`` for labevents when the
file has ``storetime`` (the event keeps its ``charttime``, the time of the draw).
Both filters run in DuckDB over the compressed CSVs, so the 300M-row chartevents never
reaches Python whole.
Each surviving row is converted with ``FeatureDef.to_canonical`` (the row's
``valueuom``, or the itemid's known unit when blank) and checked with
``is_plausible``; rejected rows become counted ``QualityNote``s.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from moe_core.feature_catalog import answer_value
from moe_core.feature_spec import FeatureDef, FeatureSpec
from moe_core.records import Event, QualityNote
from training.mimic.layout import csv_source, resolve_columns

__all__ = [
    "EVENT_COLUMNS",
    "REASON_BAD_UNIT",
    "REASON_IMPLAUSIBLE",
    "REASON_NON_NUMERIC",
    "RESULT_TIME_TABLES",
    "EncounterEvents",
    "convert_rows",
    "events_query",
    "grouped",
]

REASON_BAD_UNIT = "unknown unit"
REASON_IMPLAUSIBLE = "value out of plausible range"
REASON_NON_NUMERIC = "non-numeric value"

EVENT_COLUMNS = {
    "subject_id": ("subject_id",),
    "charttime": ("charttime",),
    "itemid": ("itemid",),
    "value": ("value",),
    "valuenum": ("valuenum",),
    "valueuom": ("valueuom",),
}
_STORETIME = {"storetime": ("storetime",)}
# Tables whose rows become known at ``storetime`` (the lab result), not ``charttime``
# (the draw): a lab drawn at 47 h and resulted at 50 h is not an input at 48 h.
RESULT_TIME_TABLES = ("labevents",)
_TYPES = {
    "subject_id": "BIGINT",
    "itemid": "BIGINT",
    "charttime": "TIMESTAMP",
    "storetime": "TIMESTAMP",
    "value": "VARCHAR",
    "valuenum": "DOUBLE",
    "valueuom": "VARCHAR",
}


def _table_select(
    con: duckdb.DuckDBPyConnection, path: Path, table: str, itemids: list[int], window: str
) -> str:
    optional = ("value", "valueuom", "storetime")
    cols = resolve_columns(con, path, EVENT_COLUMNS | _STORETIME, optional=optional)
    types = {cols[k]: v for k, v in _TYPES.items() if cols[k]}
    value = f"e.{cols['value']}" if cols["value"] else "NULL"
    uom = f"e.{cols['valueuom']}" if cols["valueuom"] else "NULL"
    ids = ", ".join(str(i) for i in itemids)
    chart = f"e.{cols['charttime']}"
    # Known at: when the result was stored (labs are resulted hours after the draw).
    known = chart
    if table in RESULT_TIME_TABLES and cols["storetime"]:
        known = f"coalesce(e.{cols['storetime']}, {chart})"
    return (
        f"SELECT w.hadm_id, {chart} AS time, e.{cols['itemid']} AS itemid, "
        f"e.{cols['valuenum']} AS valuenum, CAST({value} AS VARCHAR) AS value, "
        f"{uom} AS valueuom, '{table}' AS source "
        f"FROM {csv_source(path, types)} e JOIN {window} w "
        f"ON e.{cols['subject_id']} = w.subject_id "
        f"AND {chart} >= w.start_time AND {known} < w.stop_time "
        f"WHERE e.{cols['itemid']} IN ({ids})"
    )


def events_query(
    con: duckdb.DuckDBPyConnection,
    tables: list[tuple[str, Path]],
    spec: FeatureSpec,
    window: str,
) -> str:
    """SQL for every spec itemid row inside a window of table ``window``, by admission."""
    itemids = sorted(spec.by_itemid())
    parts = [_table_select(con, path, name, itemids, window) for name, path in tables]
    return " UNION ALL ".join(parts) + " ORDER BY hadm_id, time, source, itemid, valuenum, value"


@dataclass(slots=True)
class EncounterEvents:
    """One admission's usable events and what was dropped."""

    events: list[Event]
    quality: list[QualityNote]


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def convert_rows(rows: list[dict[str, Any]], by_itemid: dict[int, FeatureDef]) -> EncounterEvents:
    """Canonical events from one admission's raw rows; drops are counted per reason/item."""
    events: list[Event] = []
    dropped: Counter[tuple[str, int, str, str]] = Counter()
    for row in rows:
        itemid = int(row["itemid"])
        fdef = by_itemid[itemid]
        raw = row["valuenum"]
        if raw is None:
            coded = answer_value(fdef, row["value"])
            if coded is None:
                if row["value"]:
                    dropped[(row["source"], itemid, REASON_NON_NUMERIC, "")] += 1
                continue
            events.append(Event(_utc(row["time"]), fdef.code, coded))
            continue
        unit = fdef.unit_for_itemid(itemid, row["valueuom"])
        value = fdef.to_canonical(float(raw), unit)
        if value is None:
            dropped[(row["source"], itemid, REASON_BAD_UNIT, f"unit={unit!r}")] += 1
        elif not fdef.is_plausible(value):
            dropped[(row["source"], itemid, REASON_IMPLAUSIBLE, f"unit={unit!r}")] += 1
        else:
            events.append(Event(_utc(row["time"]), fdef.code, value))
    # Stable sort: equal (time, code) keep query order, which the FHIR export also uses.
    events.sort(key=lambda e: (e.time, e.code))
    quality = [
        QualityNote(f"{src} itemid {item}", reason, f"{detail} n={n}".strip())
        for (src, item, reason, detail), n in sorted(dropped.items())
    ]
    return EncounterEvents(events, quality)


def grouped(reader: Any) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """(hadm_id, rows) runs from a record-batch reader ordered by ``hadm_id``."""
    current: int | None = None
    rows: list[dict[str, Any]] = []
    for batch in reader:
        for row in batch.to_pylist():
            hadm = int(row["hadm_id"])
            if hadm != current:
                if current is not None:
                    yield current, rows
                current, rows = hadm, []
            rows.append(row)
    if current is not None:
        yield current, rows
