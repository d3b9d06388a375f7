"""Scoring outputs written in committed parts, with a progress ledger for ``--resume``.

Each chunk of finished patients is written as part files (RiskAssessment NDJSON, a
Parquet table, error JSONL) under ``<out>/parts/``: each file goes to a temporary name,
is fsynced and renamed. Only then is one line appended (and fsynced) to
``ledger.jsonl`` naming the part, its patients, its counts and the error sources it
recorded. That line is the commit point: on resume, parts without a ledger line are
deleted, committed patients are skipped, and already-reported bad lines are not
reported twice. ``finalize`` concatenates the parts into the final files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from training.score import keys

__all__ = ["TABLE_SCHEMA", "Chunk", "RunCounts", "RunStore", "iter_ndjson"]

TABLE_SCHEMA = pa.schema(
    [
        (keys.COL_PATIENT_ID, pa.string()),
        (keys.COL_ENCOUNTER_ID, pa.string()),
        (keys.COL_TASK, pa.string()),
        (keys.COL_RISK, pa.float64()),
        (keys.COL_PREDICTION_TIME, pa.string()),
        (keys.COL_MODEL_VERSION, pa.string()),
        (keys.COL_SPEC_VERSION, pa.string()),
        (keys.COL_MODALITIES_USED, pa.string()),
        (keys.COL_MODALITIES_MISSING, pa.string()),
        (keys.COL_ABSTAIN_REASON, pa.string()),
    ]
)
_RA_SUFFIX = ".ra.ndjson"
_TABLE_SUFFIX = ".table.parquet"
_ERR_SUFFIX = ".errors.jsonl"


@dataclass(slots=True)
class RunCounts:
    """What a run did; summed over committed parts."""

    patients: int = 0  # patients whose resources were read (scored or not)
    patients_scored: int = 0  # patients with at least one scored encounter
    patients_failed: int = 0  # patients with nothing scored (reason in the error file)
    encounters_scored: int = 0
    abstained: int = 0  # admissions the model abstained on (no modality in the window)
    risk_assessments: int = 0
    resources: int = 0  # resources read
    bad_resources: int = 0  # unparsable lines and unusable resources
    failures: int = 0  # lines in the error file

    def add(self, other: RunCounts) -> None:
        """Add ``other`` into this one."""
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict[str, int]:
        return {n: int(getattr(self, n)) for n in self.__slots__}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunCounts:
        return cls(**{n: int(d.get(n, 0)) for n in cls.__slots__})


@dataclass(slots=True)
class Chunk:
    """A set of finished patients and everything they produced, committed together."""

    patient_ids: list[str] = field(default_factory=list)
    risk_assessments: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    counts: RunCounts = field(default_factory=RunCounts)

    def extend(self, other: Chunk) -> None:
        """Append ``other`` to this chunk."""
        self.patient_ids.extend(other.patient_ids)
        self.risk_assessments.extend(other.risk_assessments)
        self.rows.extend(other.rows)
        self.errors.extend(other.errors)
        self.counts.add(other.counts)

    @property
    def empty(self) -> bool:
        return not (self.patient_ids or self.errors or self.counts.resources)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RunStore:
    """The output folder of one scoring run (see the module docstring)."""

    def __init__(self, out_dir: Path, *, resume: bool) -> None:
        self.out_dir = out_dir
        self.parts_dir = out_dir / keys.PARTS_DIR
        self.ledger_path = out_dir / keys.LEDGER_FILE
        self.completed: set[str] = set()
        self.reported_sources: set[str] = set()
        self.counts = RunCounts()
        self._next_part = 0
        out_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            self._clear()
        self.parts_dir.mkdir(exist_ok=True)
        committed = self._read_ledger()
        for path in self.parts_dir.iterdir():  # parts written but never committed
            if int(path.name.split(".", 1)[0]) not in committed:
                path.unlink()

    def _clear(self) -> None:
        if self.ledger_path.exists():
            self.ledger_path.unlink()
        if self.parts_dir.exists():
            for path in self.parts_dir.iterdir():
                path.unlink()

    def _read_ledger(self) -> set[int]:
        committed: set[int] = set()
        if not self.ledger_path.exists():
            return committed
        good_bytes = 0
        with open(self.ledger_path, "rb") as fh:
            for line in fh:
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError:
                    break  # a line cut short by a crash: that part was never committed
                if not line.endswith(b"\n"):
                    break
                good_bytes += len(line)
                committed.add(int(entry["part"]))
                self.completed.update(entry["patients"])
                self.reported_sources.update(entry.get("sources", []))
                self.counts.add(RunCounts.from_dict(entry["counts"]))
        with open(self.ledger_path, "r+b") as fh:
            fh.truncate(good_bytes)
        self._next_part = max(committed, default=-1) + 1
        return committed

    def commit(self, chunk: Chunk) -> None:
        """Write the chunk's part files, then its ledger line (the commit point)."""
        if chunk.empty:
            return
        errors = [e for e in chunk.errors if e.get("source") not in self.reported_sources]
        chunk.counts.failures = len(errors)
        part = self._next_part
        stem = f"{part:06d}"
        _write_atomic(
            self.parts_dir / (stem + _RA_SUFFIX),
            b"".join(orjson.dumps(r) + b"\n" for r in chunk.risk_assessments),
        )
        table = pa.Table.from_pylist(chunk.rows, schema=TABLE_SCHEMA)
        tmp = self.parts_dir / (stem + _TABLE_SUFFIX + ".tmp")
        pq.write_table(table, tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.parts_dir / (stem + _TABLE_SUFFIX))
        _write_atomic(
            self.parts_dir / (stem + _ERR_SUFFIX),
            b"".join(orjson.dumps(e) + b"\n" for e in errors),
        )
        _fsync_dir(self.parts_dir)
        sources = sorted({str(e["source"]) for e in errors if e.get("source")})
        entry = {
            "part": part,
            "patients": chunk.patient_ids,
            "sources": sources,
            "counts": chunk.counts.to_dict(),
        }
        with open(self.ledger_path, "ab") as fh:
            fh.write(orjson.dumps(entry) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._next_part += 1
        self.completed.update(chunk.patient_ids)
        self.reported_sources.update(sources)
        self.counts.add(chunk.counts)

    def _parts(self, suffix: str) -> list[Path]:
        return sorted(p for p in self.parts_dir.iterdir() if p.name.endswith(suffix))

    def finalize(self) -> RunCounts:
        """Concatenate committed parts into the final NDJSON, Parquet, CSV and error files."""
        _concat(self._parts(_RA_SUFFIX), self.out_dir / keys.RISK_NDJSON_FILE)
        _concat(self._parts(_ERR_SUFFIX), self.out_dir / keys.ERRORS_FILE)
        parquet_tmp = self.out_dir / (keys.TABLE_PARQUET_FILE + ".tmp")
        csv_tmp = self.out_dir / (keys.TABLE_CSV_FILE + ".tmp")
        with (
            pq.ParquetWriter(parquet_tmp, TABLE_SCHEMA) as pw,
            pacsv.CSVWriter(csv_tmp, TABLE_SCHEMA) as cw,
        ):
            for part in self._parts(_TABLE_SUFFIX):
                table = pq.read_table(part, schema=TABLE_SCHEMA)
                pw.write_table(table)
                cw.write_table(table)
        os.replace(parquet_tmp, self.out_dir / keys.TABLE_PARQUET_FILE)
        os.replace(csv_tmp, self.out_dir / keys.TABLE_CSV_FILE)
        _write_atomic(
            self.out_dir / keys.SUMMARY_FILE,
            orjson.dumps(self.counts.to_dict(), option=orjson.OPT_INDENT_2),
        )
        return self.counts


def _concat(parts: Iterable[Path], dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as fh:
                while block := fh.read(1 << 20):
                    out.write(block)
    os.replace(tmp, dest)


def iter_ndjson(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of an NDJSON file written by this module."""
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                yield orjson.loads(line)
