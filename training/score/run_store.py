"""Scoring outputs written in committed parts, with a progress ledger for ``--resume``.

Each chunk of finished patients is written as part files (RiskAssessment NDJSON, a
Parquet table, error JSONL) under ``<out>/parts/``: each file goes to a temporary name,
is fsynced and renamed. Only then is one line appended (and fsynced) to
``ledger.jsonl`` naming the part, its patients, its counts and the error sources it
recorded. That line is the commit point: on resume, parts without a ledger line are
deleted, committed patients are skipped, and already-reported bad lines are not
reported twice. ``finalize`` concatenates the parts into the final files.

The ledger also holds (one JSON object a line):

* first, the run's model version and source (``{"run": ...}``): ``--resume`` with
  another model or another source is refused, so one output never mixes two models;
* RiskAssessments whose write-back failed (``write_back_failed`` of a part line) and
  later retries (``{"write_back": {"done": [...], "failed": [...]}}``): ``--resume``
  sends the ones still pending again, and ``finalize`` reports them in the error file
  and in ``RunCounts.write_back_pending``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from training.score import keys

__all__ = [
    "TABLE_SCHEMA",
    "Chunk",
    "ResumeMismatchError",
    "RunCounts",
    "RunInfo",
    "RunStore",
    "WriteFailure",
    "iter_ndjson",
]

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
# Files this module writes under parts/ (a ".tmp" one is a write cut short by a crash).
_PART_NAME = re.compile(r"(\d{6})(\.ra\.ndjson|\.table\.parquet|\.errors\.jsonl)(\.tmp)?")


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
    write_back_pending: int = 0  # RiskAssessments not yet on the server (set by finalize)

    def add(self, other: RunCounts) -> None:
        """Add ``other`` into this one."""
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict[str, int]:
        return {n: int(getattr(self, n)) for n in self.__slots__}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunCounts:
        return cls(**{n: int(d.get(n, 0)) for n in cls.__slots__})


@dataclass(frozen=True, slots=True)
class WriteFailure:
    """A RiskAssessment the FHIR server did not accept (retried by ``--resume``)."""

    id: str
    patient_id: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "patient_id": self.patient_id, "detail": self.detail}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WriteFailure:
        return cls(str(d["id"]), str(d.get("patient_id", "")), str(d.get("detail", "")))

    def error_line(self) -> dict[str, Any]:
        """The error-file line of a write-back still pending at the end of the run."""
        return {
            "reason": keys.REASON_WRITE_BACK_FAILED,
            "patient_id": self.patient_id,
            "source": f"RiskAssessment/{self.id}",
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What a run's outputs depend on besides its input: checked by ``--resume``."""

    model_version: str
    source: str

    def to_dict(self) -> dict[str, str]:
        return {"model_version": self.model_version, "source": self.source}


class ResumeMismatchError(ValueError):
    """``--resume`` into an output folder written by another model or from another source."""


@dataclass(slots=True)
class Chunk:
    """A set of finished patients and everything they produced, committed together."""

    patient_ids: list[str] = field(default_factory=list)
    risk_assessments: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    counts: RunCounts = field(default_factory=RunCounts)
    write_back_failed: list[WriteFailure] = field(default_factory=list)

    def extend(self, other: Chunk) -> None:
        """Append ``other`` to this chunk."""
        self.patient_ids.extend(other.patient_ids)
        self.risk_assessments.extend(other.risk_assessments)
        self.rows.extend(other.rows)
        self.errors.extend(other.errors)
        self.counts.add(other.counts)
        self.write_back_failed.extend(other.write_back_failed)

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

    def __init__(self, out_dir: Path, *, resume: bool, run: RunInfo | None = None) -> None:
        """Open ``out_dir``; ``run``: recorded in a fresh ledger, checked on resume."""
        self.out_dir = out_dir
        self.parts_dir = out_dir / keys.PARTS_DIR
        self.ledger_path = out_dir / keys.LEDGER_FILE
        self.completed: set[str] = set()
        self.reported_sources: set[str] = set()
        self.counts = RunCounts()
        self.run: RunInfo | None = None
        # RiskAssessment id -> (part holding it, why its write-back failed)
        self.write_back_pending: dict[str, tuple[int, WriteFailure]] = {}
        self._next_part = 0
        out_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            self._clear()
        self.parts_dir.mkdir(exist_ok=True)
        committed = self._read_ledger()
        if run is not None:
            self._check_run(run)
        for path in self.parts_dir.iterdir():  # parts written but never committed
            part = _part_number(path)
            if part is not None and part not in committed:
                path.unlink()

    def _check_run(self, run: RunInfo) -> None:
        """Record ``run`` in a new ledger; refuse to continue another model's run."""
        if self.run is None:
            if self._next_part:  # a ledger from before runs were recorded: cannot tell
                raise ResumeMismatchError(
                    f"{self.ledger_path} does not say which model wrote it; "
                    "start a fresh run (without --resume) or use another --out"
                )
            self._append({"run": run.to_dict()})
            self.run = run
            return
        for what, was, now in (
            ("model version", self.run.model_version, run.model_version),
            ("source", self.run.source, run.source),
        ):
            if was != now:
                raise ResumeMismatchError(
                    f"cannot resume {self.out_dir}: it was scored with {what} {was!r}, "
                    f"this run has {now!r}; start a fresh run (without --resume) or use "
                    "another --out"
                )

    def _clear(self) -> None:
        if self.ledger_path.exists():
            self.ledger_path.unlink()
        if self.parts_dir.exists():
            for path in self.parts_dir.iterdir():
                if _part_number(path) is not None:  # leave files this module did not write
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
                self._apply(entry, committed)
        with open(self.ledger_path, "r+b") as fh:
            fh.truncate(good_bytes)
        return committed

    def commit(self, chunk: Chunk) -> None:
        """Write the chunk's part files, then its ledger line (the commit point)."""
        if chunk.empty:
            return
        errors = [e for e in chunk.errors if e.get("source") not in self.reported_sources]
        # Counted from what this part reports: a resumed run re-reads the export, and bad
        # lines an earlier part already reported must not be counted again.
        chunk.counts.failures = len(errors)
        chunk.counts.bad_resources = sum(1 for e in errors if e.get("reason") in keys.READ_REASONS)
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
        entry: dict[str, Any] = {
            "part": part,
            "patients": chunk.patient_ids,
            "sources": sources,
            "counts": chunk.counts.to_dict(),
        }
        if chunk.write_back_failed:
            entry["write_back_failed"] = [f.to_dict() for f in chunk.write_back_failed]
        self._append(entry)
        self._apply(entry, set())

    def record_write_back(self, done: Iterable[str], failed: Iterable[WriteFailure]) -> None:
        """Commit the outcome of retried write-backs (``done`` ids leave the pending set)."""
        entry = {
            "write_back": {
                "done": sorted(done),
                "failed": [f.to_dict() for f in failed],
            }
        }
        self._append(entry)
        self._apply(entry, set())

    def pending_risk_assessments(self) -> Iterator[dict[str, Any]]:
        """The committed RiskAssessments whose write-back is still pending, part by part."""
        by_part: dict[int, set[str]] = {}
        for rid, (part, _) in self.write_back_pending.items():
            by_part.setdefault(part, set()).add(rid)
        for part, ids in sorted(by_part.items()):
            for ra in iter_ndjson(self.parts_dir / f"{part:06d}{_RA_SUFFIX}"):
                if ra.get("id") in ids:
                    yield ra

    def _append(self, entry: Mapping[str, Any]) -> None:
        """Append one ledger line and fsync it (the commit point of what it says)."""
        with open(self.ledger_path, "ab") as fh:
            fh.write(orjson.dumps(entry) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _apply(self, entry: Mapping[str, Any], committed: set[int]) -> None:
        """Update the in-memory state with one ledger line (read back or just written)."""
        if "run" in entry:
            run = entry["run"]
            self.run = RunInfo(str(run["model_version"]), str(run["source"]))
            return
        if "write_back" in entry:
            for rid in entry["write_back"].get("done", []):
                self.write_back_pending.pop(rid, None)
            for d in entry["write_back"].get("failed", []):
                failure = WriteFailure.from_dict(d)
                if failure.id in self.write_back_pending:
                    part = self.write_back_pending[failure.id][0]
                    self.write_back_pending[failure.id] = (part, failure)
            return
        part = int(entry["part"])
        committed.add(part)
        self._next_part = max(self._next_part, part + 1)
        self.completed.update(entry["patients"])
        self.reported_sources.update(entry.get("sources", []))
        self.counts.add(RunCounts.from_dict(entry["counts"]))
        for d in entry.get("write_back_failed", []):
            failure = WriteFailure.from_dict(d)
            self.write_back_pending[failure.id] = (part, failure)

    def _parts(self, suffix: str) -> list[Path]:
        return sorted(
            p
            for p in self.parts_dir.iterdir()
            if (m := _PART_NAME.fullmatch(p.name)) and m.group(2) == suffix and not m.group(3)
        )

    def finalize(self) -> RunCounts:
        """Concatenate committed parts into the final NDJSON, Parquet, CSV and error files.

        Returns the run's counts, with the write-backs still pending counted (and listed
        in the error file) as they stand now, after any retries.
        """
        pending = [f for _, f in sorted(self.write_back_pending.values(), key=_part_then_id)]
        counts = replace(self.counts, write_back_pending=len(pending))
        counts.failures += len(pending)
        _concat(self._parts(_RA_SUFFIX), self.out_dir / keys.RISK_NDJSON_FILE)
        _concat(
            self._parts(_ERR_SUFFIX),
            self.out_dir / keys.ERRORS_FILE,
            b"".join(orjson.dumps(f.error_line()) + b"\n" for f in pending),
        )
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
            orjson.dumps(counts.to_dict(), option=orjson.OPT_INDENT_2),
        )
        return counts


def _part_number(path: Path) -> int | None:
    """The part a file under parts/ belongs to; None for a file this module did not write."""
    m = _PART_NAME.fullmatch(path.name)
    return int(m.group(1)) if m else None


def _part_then_id(item: tuple[int, WriteFailure]) -> tuple[int, str]:
    return item[0], item[1].id


def _concat(parts: Iterable[Path], dest: Path, tail: bytes = b"") -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as fh:
                while block := fh.read(1 << 20):
                    out.write(block)
        out.write(tail)
    os.replace(tmp, dest)


def iter_ndjson(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of an NDJSON file written by this module."""
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                yield orjson.loads(line)
