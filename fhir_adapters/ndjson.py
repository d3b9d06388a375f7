"""Streaming reader for a FHIR Bulk Data export folder: resources grouped by patient.

A hospital export does not fit in memory, so grouping is a bounded two-stage process:

1. **Scan.** Every line of every ``*.ndjson`` / ``*.ndjson.gz`` file is read once. Its
   resource type and patient are found *without* parsing the JSON when the line has no
   ``"contained"`` resources: two byte regexes (see ``_classify``). Other lines, and
   Patient lines, are parsed with orjson. Lines of types the assembler does not read
   (Claim, ExplanationOfBenefit, ...) are counted and dropped here, unparsed. Kept
   lines are buffered as raw bytes per patient in memory while the buffer holds less
   than ``spill_bytes`` (256 MiB by default); past that, everything is spilled to a
   temporary SQLite file (one row per line: patient id, bytes) and the rest of the scan
   goes there (in insert batches of at most ``min(spill_bytes, 8 MiB)``). Memory stays
   bounded by ``spill_bytes`` plus one patient's resources, whatever the export size.
2. **Group.** Patients are yielded in sorted id order (SQLite sorts on disk); each
   patient's lines are parsed with orjson only then.

**Shared resources.** ``Endpoint`` lines (the DICOMweb address an ImagingStudy names
through ``endpoint``) belong to no patient; they are parsed during the scan and handed
to every patient's assembly (``shared``), so an image source can resolve study
endpoints from a Bulk export. They are kept in memory: an export holds one per
imaging service, not one per patient.

Corrupt lines (invalid JSON, no ``resourceType``) and lines with no patient are
counted in ``NdjsonReport`` (the first few with file and line number), never fatal. A
corrupt line of a kept type is found when it is parsed in the group stage; a corrupt
line of a skipped type may go unnoticed (it is never parsed). ``log.ndjson``-style
lines without ``resourceType`` count as "not a resource".
"""

from __future__ import annotations

import gzip
import re
import sqlite3
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from fhir_adapters.fhir_keys import RT_ENDPOINT, RT_PATIENT, SUPPORTED_TYPES
from fhir_adapters.record import BuildReport, build_patient_records
from fhir_adapters.references import patient_id_of, reference_id
from moe_core.records import PatientRecord

__all__ = [
    "SHARED_TYPES",
    "NdjsonReport",
    "group_by_patient",
    "ndjson_files",
    "read_ndjson_lines",
    "records_from_ndjson",
]

DEFAULT_SPILL_BYTES = 256 * 1024 * 1024
_FLUSH_LINES = 10_000  # spilled lines per SQLite insert batch, at most ...
_FLUSH_BYTES = 8 * 1024 * 1024  # ... and at most this many bytes (or spill_bytes if smaller)
SHARED_TYPES = frozenset({RT_ENDPOINT})  # patient-less resources image sources need
_MAX_EXAMPLES = 20
_TYPE_RE = re.compile(rb'"resourceType"\s*:\s*"([A-Za-z]+)"')
_REF_RE = re.compile(rb'"(?:subject|patient)"\s*:\s*\{[^{}]*?"reference"\s*:\s*"([^"]+)"')
_ID_RE = re.compile(rb'"id"\s*:\s*"([^"]+)"')


@dataclass(slots=True)
class NdjsonReport:
    """What the scan saw: counts per type, and what it could not use."""

    files: int = 0
    lines: int = 0
    kept: Counter[str] = field(default_factory=Counter)
    skipped_types: Counter[str] = field(default_factory=Counter)
    no_patient: Counter[str] = field(default_factory=Counter)
    corrupt: int = 0
    not_resources: int = 0
    examples: list[str] = field(default_factory=list)  # "file:line: reason"
    spilled: bool = False

    def _example(self, path: Path, line_no: int, reason: str) -> None:
        if len(self.examples) < _MAX_EXAMPLES:
            self.examples.append(f"{path.name}:{line_no}: {reason}")


def ndjson_files(folder: Path) -> list[Path]:
    """The ``*.ndjson`` and ``*.ndjson.gz`` files of a Bulk export folder, sorted."""
    files = [*folder.glob("*.ndjson"), *folder.glob("*.ndjson.gz")]
    return sorted(p for p in files if p.is_file())


def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.GzipFile(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def read_ndjson_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, stripped line) for every non-blank line of a file."""
    with _open(path) as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if line:
                yield n, line


def _classify(line: bytes, wanted: frozenset[str]) -> tuple[str | None, str | None, bool]:
    """(resource type, patient id, parsed-ok) from raw bytes, parsing only if ambiguous.

    Without ``"contained"`` a line holds one resource, so the first ``resourceType`` is
    the resource's own; unwanted types stop there, unparsed. Within the types the
    assembler reads, ``subject`` / ``patient`` only occur at the top level, so the first
    reference found is the patient. Patients themselves are parsed (for their id).
    """
    if b'"contained"' not in line:
        m = _TYPE_RE.search(line)
        if m is not None:
            rtype = m.group(1).decode()
            if rtype not in wanted:
                return rtype, None, True
            if rtype != RT_PATIENT:
                ref = _REF_RE.search(line)
                if ref is not None:
                    return rtype, reference_id(ref.group(1).decode()), True
    try:
        res: Any = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None, None, False
    if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
        return None, None, True
    return res["resourceType"], patient_id_of(res), True


class _Spill:
    """Raw lines per patient: in memory up to a byte budget, then a temporary SQLite file."""

    def __init__(self, spill_bytes: int, tmp_dir: Path | None, report: NdjsonReport) -> None:
        self.limit = spill_bytes
        self.tmp_dir = tmp_dir
        self.report = report
        self.memory: dict[str, list[bytes]] = defaultdict(list)
        self.size = 0
        self.db: sqlite3.Connection | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._pending: list[tuple[str, bytes]] = []
        self._pending_bytes = 0
        self._flush_bytes = min(spill_bytes, _FLUSH_BYTES)

    def add(self, pid: str, line: bytes) -> None:
        if self.db is None:
            self.memory[pid].append(line)
            self.size += len(line)
            if self.size > self.limit:
                self._start_db()
        else:
            self._pending.append((pid, line))
            self._pending_bytes += len(line)
            # Bounded by bytes too: 10,000 base64 notes would be gigabytes, not a batch.
            if len(self._pending) >= _FLUSH_LINES or self._pending_bytes >= self._flush_bytes:
                self._flush()

    def _start_db(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="ndjson-spill-", dir=self.tmp_dir)
        self.db = sqlite3.connect(Path(self._tmp.name) / "spill.sqlite")
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE lines (pid TEXT NOT NULL, line BLOB NOT NULL)")
        self.report.spilled = True
        for pid, lines in self.memory.items():
            self._pending.extend((pid, ln) for ln in lines)
        self.memory.clear()
        self._flush()

    def _flush(self) -> None:
        if self.db is not None and self._pending:
            self.db.executemany("INSERT INTO lines VALUES (?, ?)", self._pending)
            self._pending.clear()
            self._pending_bytes = 0

    def groups(self) -> Iterator[tuple[str, list[bytes]]]:
        try:
            if self.db is None:
                for pid in sorted(self.memory):
                    yield pid, self.memory.pop(pid)
                return
            self._flush()
            self.db.execute("CREATE INDEX lines_pid ON lines (pid)")
            current: str | None = None
            batch: list[bytes] = []
            for pid, line in self.db.execute("SELECT pid, line FROM lines ORDER BY pid, rowid"):
                if pid != current and current is not None:
                    yield current, batch
                    batch = []
                current = pid
                batch.append(bytes(line))
            if current is not None:
                yield current, batch
        finally:
            self.close()

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def group_by_patient(
    source: Path | Iterable[Path],
    *,
    types: Iterable[str] = SUPPORTED_TYPES,
    spill_bytes: int = DEFAULT_SPILL_BYTES,
    tmp_dir: Path | None = None,
    report: NdjsonReport | None = None,
    shared: list[dict[str, Any]] | None = None,
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Yield ``(patient_id, resources)`` for every patient of an export, in id order.

    ``source`` is an export folder or a list of NDJSON files. Only resources whose type
    is in ``types`` are kept. With ``shared`` given, ``SHARED_TYPES`` resources (no
    patient) are appended to it; it is complete before the first patient is yielded.
    See the module docstring for the memory bound.
    """
    report = report if report is not None else NdjsonReport()
    wanted = frozenset(types) | (SHARED_TYPES if shared is not None else frozenset())
    files = ndjson_files(source) if isinstance(source, Path) else list(source)
    spill = _Spill(spill_bytes, tmp_dir, report)
    try:
        for path in files:
            report.files += 1
            for line_no, line in read_ndjson_lines(path):
                report.lines += 1
                rtype, pid, ok = _classify(line, wanted)
                if not ok:
                    report.corrupt += 1
                    report._example(path, line_no, "invalid JSON")
                elif rtype is None:
                    report.not_resources += 1
                    report._example(path, line_no, "no resourceType")
                elif rtype not in wanted:
                    report.skipped_types[rtype] += 1
                elif shared is not None and rtype in SHARED_TYPES and pid is None:
                    _keep_shared(shared, report, rtype, line)
                else:
                    _keep(spill, report, rtype, pid, line, path, line_no)
    except BaseException:
        spill.close()
        raise
    for pid, lines in spill.groups():
        resources: list[dict[str, Any]] = []
        for line in lines:
            try:
                res = orjson.loads(line)
            except orjson.JSONDecodeError:
                report.corrupt += 1
                continue
            resources.append(res)
        yield pid, resources


def _keep(
    spill: _Spill,
    report: NdjsonReport,
    rtype: str,
    pid: str | None,
    line: bytes,
    path: Path,
    line_no: int,
) -> None:
    if pid is None:
        report.no_patient[rtype] += 1
        report._example(path, line_no, f"{rtype} without patient")
        return
    report.kept[rtype] += 1
    spill.add(pid, line)


def _keep_shared(
    shared: list[dict[str, Any]], report: NdjsonReport, rtype: str, line: bytes
) -> None:
    res = orjson.loads(line)  # _classify parsed it already: valid JSON
    report.kept[rtype] += 1
    shared.append(res)


def records_from_ndjson(
    source: Path | Iterable[Path],
    *,
    ndjson_report: NdjsonReport | None = None,
    build_report: BuildReport | None = None,
    spill_bytes: int = DEFAULT_SPILL_BYTES,
    **build_kwargs: Any,
) -> Iterator[PatientRecord]:
    """Stream ``PatientRecord`` s from a Bulk export; ``build_kwargs`` go to the assembler
    (``prediction_time``, ``window_hours``, ``spec``, ``binary_resolver``, ``image_source``).
    """
    build_report = build_report if build_report is not None else BuildReport()
    ndjson_report = ndjson_report if ndjson_report is not None else NdjsonReport()
    shared: list[dict[str, Any]] = []
    groups = group_by_patient(source, spill_bytes=spill_bytes, report=ndjson_report, shared=shared)
    for pid, resources in groups:
        build_report.patients += 1
        yield from build_patient_records(
            pid, resources, report=build_report, shared=shared, **build_kwargs
        )
    build_report.resources.update(ndjson_report.kept)
