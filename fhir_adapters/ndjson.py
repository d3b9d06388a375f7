"""Streaming reader for a FHIR Bulk Data export folder: resources grouped by patient.

A hospital export does not fit in memory, so grouping is a bounded two-stage process:

1. **Scan.** Every line of every ``*.ndjson`` / ``*.ndjson.gz`` file is read once. Its
   resource type and patient are found *without* parsing the JSON (see ``_classify``):
   the type from a leading ``{"resourceType":"..."`` (the object's first key, so never a
   contained resource's), else from a byte regex when the line has no ``"contained"``;
   the patient from a byte regex when it has none. Other lines, and Patient lines, are
   parsed with orjson. Lines of types the assembler does not read (Claim,
   ExplanationOfBenefit, ... with or without contained resources) are counted and
   dropped here, unparsed. Kept
   lines are buffered as raw bytes per patient in memory while the buffer holds less
   than ``spill_bytes`` (256 MiB by default); past that, everything is spilled to a
   temporary SQLite file (one row per line: patient id, bytes) and the rest of the scan
   goes there (in insert batches of at most ``min(spill_bytes, 8 MiB)``). Memory stays
   bounded by ``spill_bytes`` plus one patient's resources, whatever the export size.
2. **Group.** Patients are yielded in sorted id order (SQLite sorts on disk); each
   patient's lines are parsed with orjson only then. ``records_from_ndjson`` never holds
   a patient's parsed resources all at once: it hands them to the assembler one by one
   as they are parsed (see ``_records_one_pass``), which keeps the garbage collector's
   old generations, and so its full collections, small.

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
from fhir_adapters.record import BuildReport, build_unique_patient_records, unique_order
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
_LEADING_TYPE_RE = re.compile(rb'\{\s*"resourceType"\s*:\s*"([A-Za-z]+)"')
_COMPACT_PREFIX = b'{"resourceType":"'
_COMPACT_LEN = len(_COMPACT_PREFIX)
_TYPE_NAMES: dict[bytes, str] = {}  # raw type name -> str (a few dozen FHIR types)
_MAX_TYPE_NAMES = 1024
_ID_KEY = b',"id":"'
_ID_KEY_LEN = len(_ID_KEY)
_KEY_LEN = len(b'"subject"')  # == len(b'"patient"')


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


def _type_name(raw: bytes) -> str | None:
    """A raw type name as ``str`` if it is ``[A-Za-z]+`` (memoised), else ``None``."""
    name = _TYPE_NAMES.get(raw)
    if name is None and raw.isalpha():  # bytes.isalpha: ASCII letters only, like [A-Za-z]+
        name = raw.decode("ascii")
        if len(_TYPE_NAMES) < _MAX_TYPE_NAMES:
            _TYPE_NAMES[raw] = name
    return name


def _leading_type(line: bytes) -> str | None:
    """The type named by a line's FIRST key, when that key is ``resourceType``.

    The first key of the top-level object cannot belong to a contained resource, so this
    holds with or without ``"contained"``. The common compact form is checked with
    ``startswith`` (no regex); an escaped or non-letter type falls back to the parser.
    """
    if line.startswith(_COMPACT_PREFIX):
        end = line.find(b'"', _COMPACT_LEN)
        if end > 0:
            raw = line[_COMPACT_LEN:end]
            name = _TYPE_NAMES.get(raw) or _type_name(raw)
            if name is not None:
                return name
    m = _LEADING_TYPE_RE.match(line)
    return m.group(1).decode("ascii") if m is not None else None


def _leading_key(line: bytes) -> tuple[str, str] | None:
    """(type, id) of a line that starts ``{"resourceType":"<type>","id":"<id>"``.

    Both are then top-level keys (the object's first two). ``None`` for any other form,
    an empty id, or an id with a JSON escape (its raw bytes would not be its value).
    The object may still repeat a key later: callers check against the parsed resource.
    """
    if not line.startswith(_COMPACT_PREFIX):
        return None
    end = line.find(b'"', _COMPACT_LEN)
    if end < 0 or not line.startswith(_ID_KEY, end + 1):
        return None
    raw_type = line[_COMPACT_LEN:end]
    rtype = _TYPE_NAMES.get(raw_type) or _type_name(raw_type)
    start = end + 1 + _ID_KEY_LEN
    stop = line.find(b'"', start)
    raw_id = line[start:stop]
    if rtype is None or stop <= start or b"\\" in raw_id:
        return None
    try:
        return rtype, raw_id.decode()
    except UnicodeDecodeError:
        return None


def _reference_match(line: bytes) -> re.Match[bytes] | None:
    """``_REF_RE.search(line)``, started at the first ``"subject"`` / ``"patient"`` key.

    No match can start before the first of those literals, so the result is the same;
    ``bytes.find`` only gets there much faster than the regex engine on long lines.
    ``"patient"`` is looked for only before the first ``"subject"`` (most resources name
    their patient ``subject``, early), so a line is not scanned to its end twice.
    """
    start = line.find(b'"subject"')
    before = line.find(b'"patient"', 0, len(line) if start < 0 else start + _KEY_LEN - 1)
    if before >= 0:
        start = before
    return _REF_RE.search(line, start) if start >= 0 else None


class _PatientIds:
    """``reference_id`` of raw reference bytes, memoised (a patient's lines repeat it)."""

    def __init__(self, limit: int = 65_536) -> None:
        self.limit = limit
        self.ids: dict[bytes, str | None] = {}

    def __call__(self, raw: bytes) -> str | None:
        try:
            return self.ids[raw]
        except KeyError:
            pass
        if len(self.ids) >= self.limit:
            self.ids.clear()  # bounded: an export may name millions of patients
        pid = self.ids[raw] = reference_id(raw.decode())
        return pid


def _classify(
    line: bytes, wanted: frozenset[str], patient_ids: _PatientIds | None = None
) -> tuple[str | None, str | None, bool]:
    """(resource type, patient id, parsed-ok) from raw bytes, parsing only if ambiguous.

    A line whose first key is ``resourceType`` names its type there (``_leading_type``);
    otherwise, without ``"contained"`` a line holds one resource, so the first
    ``resourceType`` is the resource's own. Unwanted types stop there, unparsed. Within
    the types the assembler reads, ``subject`` / ``patient`` only occur at the top
    level, so without ``"contained"`` the first reference found is the patient.
    Patients themselves are parsed (for their id).
    """
    rtype = _leading_type(line)
    if rtype is None and b'"contained"' not in line:
        m = _TYPE_RE.search(line)
        rtype = m.group(1).decode() if m is not None else None
    if rtype is not None:
        if rtype not in wanted:
            return rtype, None, True
        if rtype != RT_PATIENT and b'"contained"' not in line:
            ref = _reference_match(line)
            if ref is not None:
                raw = ref.group(1)
                pid = patient_ids(raw) if patient_ids is not None else reference_id(raw.decode())
                return rtype, pid, True
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
    groups = _line_groups(
        source, types=types, spill_bytes=spill_bytes, tmp_dir=tmp_dir, report=report, shared=shared
    )
    for pid, lines in groups:
        yield pid, [res for _, res in _parse_lines(lines, report)]


def _parse_lines(
    lines: Iterable[bytes], report: NdjsonReport
) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """(line, resource) for each line orjson parses; corrupt lines are counted in
    ``report`` and skipped. (A kept line starts with ``{``: it parses to a dict or fails.)"""
    loads = orjson.loads
    for line in lines:
        try:
            res = loads(line)
        except orjson.JSONDecodeError:
            report.corrupt += 1
            continue
        yield line, res


def _unique_lines(
    lines: Iterable[bytes], report: NdjsonReport
) -> tuple[list[bytes], list[int], int]:
    """(valid lines, positions in them to keep, duplicates dropped): ``unique_order`` over
    the lines parsed one at a time; corrupt lines are counted in ``report`` and left out."""
    valid: list[bytes] = []

    def resources() -> Iterator[dict[str, Any]]:
        for line, res in _parse_lines(lines, report):
            valid.append(line)
            yield res

    order, dropped = unique_order(resources())
    return valid, order, dropped


def _line_groups(
    source: Path | Iterable[Path],
    *,
    types: Iterable[str],
    spill_bytes: int,
    tmp_dir: Path | None,
    report: NdjsonReport,
    shared: list[dict[str, Any]] | None,
) -> Iterator[tuple[str, list[bytes]]]:
    """``group_by_patient`` before parsing: ``(patient_id, raw lines)`` in id order."""
    wanted = frozenset(types) | (SHARED_TYPES if shared is not None else frozenset())
    files = ndjson_files(source) if isinstance(source, Path) else list(source)
    spill = _Spill(spill_bytes, tmp_dir, report)
    patient_ids = _PatientIds()
    try:
        for path in files:
            report.files += 1
            _scan_file(path, wanted, spill, report, shared, patient_ids)
    except BaseException:
        spill.close()
        raise
    yield from spill.groups()


def _scan_file(
    path: Path,
    wanted: frozenset[str],
    spill: _Spill,
    report: NdjsonReport,
    shared: list[dict[str, Any]] | None,
    patient_ids: _PatientIds,
) -> None:
    """Classify every line of one file into ``spill`` / ``shared`` / the report's counts.

    Per-line counts go to local counters merged into ``report`` when the file is done
    (or fails): the same totals, in the same key order, without attribute lookups.
    """
    lines = 0
    kept: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    try:
        for line_no, line in read_ndjson_lines(path):
            lines += 1
            rtype, pid, ok = _classify(line, wanted, patient_ids)
            if not ok:
                report.corrupt += 1
                report._example(path, line_no, "invalid JSON")
            elif rtype is None:
                report.not_resources += 1
                report._example(path, line_no, "no resourceType")
            elif rtype not in wanted:
                skipped[rtype] += 1
            elif pid is not None:
                kept[rtype] += 1
                spill.add(pid, line)
            elif shared is not None and rtype in SHARED_TYPES:
                kept[rtype] += 1
                shared.append(orjson.loads(line))  # _classify parsed it: valid JSON
            else:
                report.no_patient[rtype] += 1
                report._example(path, line_no, f"{rtype} without patient")
    finally:
        report.lines += lines
        report.kept.update(kept)
        report.skipped_types.update(skipped)


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
    groups = _line_groups(
        source,
        types=SUPPORTED_TYPES,
        spill_bytes=spill_bytes,
        tmp_dir=None,
        report=ndjson_report,
        shared=shared,
    )
    for pid, lines in groups:
        build_report.patients += 1
        records = _records_one_pass(pid, lines, ndjson_report, build_report, shared, build_kwargs)
        if records is None:
            records = _records_two_passes(
                pid, lines, ndjson_report, build_report, shared, build_kwargs
            )
        yield from records
    build_report.resources.update(ndjson_report.kept)


# One patient's lines -> records. A patient's parsed resources are never all alive at
# once: each is parsed as the assembler reads it and dropped after. Keeping them all
# (``group_by_patient``) makes them survive into the old generations of the garbage
# collector, whose full collections then rescan them and the whole heap: with a large
# heap (fhir.resources, torch...) that cost more than the assembly itself.


class _KeyMismatchError(Exception):
    """A parsed resource's type / id is not the one its line's prefix showed."""


def _records_one_pass(
    pid: str,
    lines: list[bytes],
    ndjson_report: NdjsonReport,
    build_report: BuildReport,
    shared: list[dict[str, Any]],
    build_kwargs: dict[str, Any],
) -> list[PatientRecord] | None:
    """Records from a single parse of each line, when the lines' prefixes prove there is
    nothing to deduplicate (``_leading_key``: every line's (type, id) known and distinct).

    Deduplication would then keep every resource in line order, so the assembler can read
    them straight from the parser. Each parsed resource is checked against its prefix (a
    JSON object may repeat a key; the parser keeps the last): on a mismatch the patient's
    partial work is discarded (counts go to scratch reports) and ``None`` is returned, for
    ``_records_two_passes``. ``None`` too when the prefixes prove nothing.
    """
    keys = [_leading_key(line) for line in lines]
    if None in keys or len(set(keys)) != len(keys):
        return None
    scratch, scratch_ndjson = BuildReport(), NdjsonReport()

    def resources() -> Iterator[dict[str, Any]]:
        for line, key in zip(lines, keys, strict=True):
            try:
                res = orjson.loads(line)
            except orjson.JSONDecodeError:
                scratch_ndjson.corrupt += 1
                continue
            if (res.get("resourceType"), res.get("id")) != key:
                raise _KeyMismatchError
            yield res

    try:
        records = build_unique_patient_records(
            pid, resources(), report=scratch, shared=shared, **build_kwargs
        )
    except _KeyMismatchError:
        return None
    build_report.add(scratch)
    ndjson_report.corrupt += scratch_ndjson.corrupt
    return records


def _records_two_passes(
    pid: str,
    lines: list[bytes],
    ndjson_report: NdjsonReport,
    build_report: BuildReport,
    shared: list[dict[str, Any]],
    build_kwargs: dict[str, Any],
) -> list[PatientRecord]:
    """Records from two passes: deduplicate (``unique_order``; each parsed resource is
    dropped at once), then parse the kept lines again as the assembler reads them."""
    valid, order, dropped = _unique_lines(lines, ndjson_report)
    unique = (orjson.loads(valid[i]) for i in order)
    return build_unique_patient_records(
        pid, unique, dropped=dropped, report=build_report, shared=shared, **build_kwargs
    )
