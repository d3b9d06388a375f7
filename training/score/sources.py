"""Bulk NDJSON on disk -> one ``PatientGroup`` per patient, with bounded memory.

A Bulk Data export is one file per resource type, so a patient's resources are spread
over many files. ``spill_groups`` reads every line once and parses it once. A small
export is grouped in memory; past the memory budget every line goes to one of ``P``
partition files chosen by its patient id (spill to disk), and partitions are grouped
one at a time.

The budget is for *parsed* resources: Python dicts take about ``PARSED_OVERHEAD`` times
the bytes of their JSON line, so raw bytes are weighed by that factor. ``P`` follows the
export's size (``partition_count``) so that one partition's lines, parsed, fit in the
budget; a partition that still comes out too large (an export bigger than its files
said, or ids unlike those the ranges were cut from) is split again before it is
grouped. Memory is then bounded by the budget, except for a single patient whose own
resources exceed it (a patient is always grouped whole).

Partitions are ranges of patient ids, cut evenly by patient count (the bytes read so
far are a biased sample: a Bulk export is read type by type) from the patients held in
memory when the spill starts, so groups come out in patient-id order whether the export
spilled or not: the memory budget never changes the scoring batches, hence never the
results.

Lines that are not JSON, resources of a type FHIR R4 does not define, and resources
that name no patient become ``Failure`` items; so does a gzip file that is cut short or
corrupt (the lines before the fault are kept). The run goes on.

Plain (``.ndjson``) and gzip (``.ndjson.gz``) files are read alike. Within a group,
resources are ordered by (type, id), so every engine sees the same order.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import gc
import gzip
import itertools
import os
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import orjson

from fhir_adapters.fhir_keys import SUPPORTED_TYPES
from fhir_adapters.references import patient_id_of
from training.score import keys
from training.score.fhir_r4 import R4_RESOURCE_TYPES
from training.score.pipeline import Failure, PatientGroup, RawPatientGroup

__all__ = [
    "DEFAULT_MEMORY_BYTES",
    "PARSED_OVERHEAD",
    "SCORED_RESOURCE_TYPES",
    "ParsedLine",
    "SpillStats",
    "canonical_group",
    "estimated_raw_bytes",
    "gc_paused",
    "is_fhir_type",
    "line_source",
    "ndjson_files",
    "open_ndjson",
    "parse_group",
    "parse_line",
    "partition_count",
    "read_lines",
    "resource_patient_id",
    "spill_groups",
]

# Resource types the record builder reads. Other FHIR R4 types (Claim, Organization,
# ...) are skipped silently; a type FHIR R4 does not define is counted and reported.
SCORED_RESOURCE_TYPES = SUPPORTED_TYPES
_PATIENT_PREFIX = "Patient/"
DEFAULT_MEMORY_BYTES = 128 * 1024 * 1024  # parsed resources held at once (estimated)
# Bytes of parsed Python objects per byte of NDJSON: tracemalloc measures about 4.9 on
# Synthea R4 resources; rounded up so the estimate errs on the safe side.
PARSED_OVERHEAD = 6
_MAX_FANOUT = 256  # partition files open at once (well under the usual 1024 fd limit)
_MIN_PARTITION_BYTES = 1024
# Lines parsed with the cyclic GC paused before the failures found are handed on.
_READ_BLOCK_LINES = 4096
_TARGET_CACHE = 65_536  # patients whose spill file and line prefix are remembered
# Errors of a gzip stream that is cut short or damaged: the file is reported, not fatal.
_CORRUPT_FILE_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)

# (patient id, resource) on success, a Failure otherwise, None for a skipped line.
ParsedLine = tuple[str, dict[str, Any]] | Failure | None


@dataclass(slots=True)
class SpillStats:
    """How ``spill_groups`` grouped an export (for tests, benchmarks and logs)."""

    spilled: bool = False
    partitions: int = 0  # partition files grouped, re-splits included
    largest_partition_bytes: int = 0  # spill-file bytes of the largest partition grouped


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for a bulk phase (restored afterwards).

    Parsed resources are acyclic trees of dicts and lists, freed by reference counting;
    but holding a partition's worth of them (about a million containers) makes every
    full collection walk them all, which cost more than the parsing itself. Never held
    across a ``yield``: the consumer runs with the collector as it found it.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def ndjson_files(folder: Path) -> list[Path]:
    """The ``*.ndjson`` and ``*.ndjson.gz`` files under ``folder``, sorted by name."""
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder: {folder}")
    found = [
        p
        for p in folder.rglob("*")
        if p.is_file() and (p.name.endswith(".ndjson") or p.name.endswith(".ndjson.gz"))
    ]
    return sorted(found, key=lambda p: str(p.relative_to(folder)))


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def open_ndjson(path: Path) -> IO[bytes]:
    """A binary line reader for a plain or gzip NDJSON file (by content, not name)."""
    if _is_gzip(path):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb")


def estimated_raw_bytes(path: Path) -> int:
    """Uncompressed size of an NDJSON file, to size the spill partitions before reading.

    For gzip, the trailer's ISIZE (uncompressed size mod 2**32, of the last member only);
    never less than the compressed size. An estimate: oversized partitions are split
    again anyway.
    """
    size = path.stat().st_size
    if size < 18 or not _is_gzip(path):
        return size
    with open(path, "rb") as fh:
        fh.seek(-4, os.SEEK_END)
        isize = int.from_bytes(fh.read(4), "little")
    return max(size, isize)


def partition_count(raw_bytes: int, memory_bytes: int) -> int:
    """Spill partitions for ``raw_bytes`` of NDJSON so one, parsed, fits ``memory_bytes``."""
    return max(1, min(_MAX_FANOUT, -(-raw_bytes // _partition_bytes(memory_bytes))))


def _partition_bytes(memory_bytes: int) -> int:
    """Largest spill partition (raw bytes) to group at once under ``memory_bytes``.

    Never under ``_MIN_PARTITION_BYTES``: a degenerate budget (0 in tests) would split
    every partition down to one patient, in thousands of files.
    """
    return max(_MIN_PARTITION_BYTES, memory_bytes // PARSED_OVERHEAD)


def resource_patient_id(resource: dict[str, Any]) -> str | None:
    """The id of the patient a resource belongs to (its own id for a Patient).

    Fast path for the usual ``{"reference": "Patient/<id>"}``; anything else goes through
    ``fhir_adapters.references.patient_id_of`` (same answer, more forms understood).
    """
    ref = resource.get("subject")
    if ref is None:
        ref = resource.get("patient")
    if isinstance(ref, dict):
        text = ref.get("reference")
        if isinstance(text, str) and text.startswith(_PATIENT_PREFIX):
            rid = text[len(_PATIENT_PREFIX) :]
            if rid and "/" not in rid and "?" not in rid:
                return rid
    return patient_id_of(resource)


def parse_line(line: bytes, source: str) -> ParsedLine:
    """One NDJSON line -> (patient id, resource), a Failure, or None (blank/shared)."""
    if not line.strip():
        return None
    try:
        resource = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return Failure(keys.REASON_BAD_RESOURCE, None, source, str(exc)[:200])
    if not isinstance(resource, dict):
        return Failure(keys.REASON_BAD_RESOURCE, None, source, "not a JSON object")
    rtype = resource.get("resourceType")
    if rtype not in SCORED_RESOURCE_TYPES:
        if isinstance(rtype, str) and is_fhir_type(rtype):
            return None
        return Failure(keys.REASON_UNKNOWN_TYPE, None, source, f"resourceType {rtype!r}")
    pid = resource_patient_id(resource)
    if pid is None:
        return Failure(keys.REASON_NO_PATIENT, None, source, f"{rtype}/{resource.get('id')}")
    return pid, resource


def is_fhir_type(rtype: str) -> bool:
    """Whether FHIR R4 defines a *resource* type spelled exactly ``rtype``.

    Data types ("Coding") and wrong-cased names ("OBSERVATION") are not resource types:
    a line carrying one is reported as an unknown type, not skipped as a known one.
    """
    return rtype in R4_RESOURCE_TYPES


def line_source(path: Path, line_no: int) -> str:
    """How an error names a line: ``<file name>:<1-based line>``."""
    return f"{path.name}:{line_no}"


def read_lines(path: Path) -> Iterator[tuple[bytes, ParsedLine]]:
    """(raw line, parsed line) for each line of ``path``, in order.

    A gzip file that is cut short or damaged ends with ``(b"", Failure)`` naming the
    file: the lines decompressed before the fault have been yielded and are kept, so
    one bad download costs that file's tail, not the run.
    """
    line_no = 0
    try:
        with open_ndjson(path) as fh:
            for line_no, line in enumerate(fh, start=1):
                parsed = parse_line(line, "")
                if isinstance(parsed, Failure):  # named only when it fails: the usual
                    parsed = dataclasses.replace(parsed, source=line_source(path, line_no))
                yield line, parsed
    except _CORRUPT_FILE_ERRORS as exc:
        detail = f"{type(exc).__name__}: {exc}; {line_no} lines read before the fault"
        yield b"", Failure(keys.REASON_UNREADABLE_FILE, None, path.name, detail[:500])


def canonical_group(patient_id: str, resources: Iterable[dict[str, Any]]) -> PatientGroup:
    """A group with resources in (type, id) order, whatever order they were read in."""
    ordered = sorted(
        resources, key=lambda r: (str(r.get("resourceType", "")), str(r.get("id", "")))
    )
    return PatientGroup(patient_id, ordered)


def parse_group(group: PatientGroup | RawPatientGroup) -> PatientGroup:
    """The parsed, canonically ordered group of a ``RawPatientGroup`` (others unchanged).

    The lines are those ``spill_groups`` validated while reading, so they parse.
    """
    if isinstance(group, PatientGroup):
        return group
    with gc_paused():
        return canonical_group(group.patient_id, [orjson.loads(raw) for raw in group.lines])


def _split_record(record: bytes) -> tuple[bytes, bytes]:
    """(JSON-encoded patient id, raw resource) of a spill-file line."""
    key, _, raw = record.partition(b"\t")
    return key, raw


def _even_splits(sizes: dict[str, int], n: int) -> list[str]:
    """At most ``n - 1`` patient ids that cut ``sizes`` (id -> bytes, any order) into
    ranges of about equal bytes; a range starts at its split id."""
    per_range = sum(sizes.values()) / max(1, n)
    splits: list[str] = []
    held = 0
    for pid in sorted(sizes):
        # cut before a patient that would overfill the range: a range is then at most
        # ``per_range`` bytes or one patient, and two patients or more always get a cut
        if held and held + sizes[pid] > per_range and len(splits) < n - 1:
            splits.append(pid)
            held = 0
        held += sizes[pid]
    return splits


class _Partitions:
    """Spill files under ``folder``, one per range of patient ids (``splits`` cut them).

    Ranges, not hashes: partitions grouped in turn, each in sorted order, yield the
    patients in the same sorted order as the in-memory path, so the memory budget never
    changes which patients share a scoring batch (float results can depend on that).
    """

    def __init__(self, folder: Path, splits: list[str], stack: contextlib.ExitStack) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.splits = splits
        self.paths = [folder / f"{i:04d}" for i in range(len(splits) + 1)]
        self.files = [stack.enter_context(p.open("wb")) for p in self.paths]
        # patient id -> (its file's write, its line prefix); bounded, cleared when full
        self._targets: dict[str, tuple[Callable[[bytes], int], bytes]] = {}

    def add(self, pid: str, line: bytes) -> None:
        """Spill one resource line of patient ``pid``.

        A spill-file line is the patient id as a JSON string, a tab, the raw resource:
        the JSON string escapes tabs and newlines, so any patient id round-trips.
        """
        target = self._targets.get(pid)
        if target is None:
            if len(self._targets) >= _TARGET_CACHE:
                self._targets.clear()
            file = self.files[bisect.bisect_right(self.splits, pid)]
            target = self._targets[pid] = (file.write, orjson.dumps(pid) + b"\t")
        write, prefix = target
        write(prefix + line.rstrip(b"\r\n") + b"\n")

    def copy(self, pid: str, record: bytes) -> None:
        """Write a spill-file line of patient ``pid`` into its range's file."""
        self.files[bisect.bisect_right(self.splits, pid)].write(record)


def spill_groups(
    files: Iterable[Path],
    *,
    partitions: int | None = None,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    skip: frozenset[str] | set[str] = frozenset(),
    workdir: Path | None = None,
    stats: SpillStats | None = None,
    raw: bool = False,
) -> Iterator[PatientGroup | RawPatientGroup | Failure]:
    """Every patient's resources as one group, in patient-id order (module docstring).

    Parsed resources stay in memory while their estimated parsed size is under
    ``memory_bytes``; past that, everything goes to spill partitions (``partitions``, or
    by default as many as the export's size needs; their id ranges are cut from the
    patients read so far) and each is grouped in turn. Patients in ``skip`` (already
    scored, for ``--resume``) are dropped while reading. Failures are yielded as they
    are found.

    ``raw=True`` yields ``RawPatientGroup`` s instead (the same patients, in the same
    order; ``parse_group`` turns each into the ``PatientGroup`` yielded otherwise), for
    consumers that parse elsewhere: each line is then parsed once here, to validate it
    and find its patient, and once by the consumer.
    """
    if partitions is not None and partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    stats = stats if stats is not None else SpillStats()
    paths = list(files)
    with tempfile.TemporaryDirectory(prefix="moe-score-", dir=workdir) as tmp:
        memory: dict[str, list[Any]] = {}  # parsed resources, or raw lines if ``raw``
        spill: _Partitions | None = None
        held = 0
        with contextlib.ExitStack() as stack:
            lines = itertools.chain.from_iterable(read_lines(p) for p in paths)
            more = True
            while more:
                found: list[Failure] = []  # yielded after the block, with the GC back on
                with gc_paused():
                    block = list(itertools.islice(lines, _READ_BLOCK_LINES))
                    more = len(block) == _READ_BLOCK_LINES
                    for line, parsed in block:
                        if parsed is None:
                            continue
                        if isinstance(parsed, Failure):
                            found.append(parsed)
                            continue
                        pid, resource = parsed
                        if pid in skip:
                            continue
                        if spill is not None:  # the raw line: no re-serialisation
                            spill.add(pid, line)
                            continue
                        memory.setdefault(pid, []).append(line if raw else resource)
                        held += len(line)
                        if held * PARSED_OVERHEAD > memory_bytes:  # from here on, spill
                            total = sum(estimated_raw_bytes(p) for p in paths)
                            # a quarter of headroom: ranges of even patient counts
                            # vary in bytes, and one over budget is read thrice
                            n = partitions or partition_count(total + total // 4, memory_bytes)
                            counts = dict.fromkeys(memory, 1)  # patients, not bytes
                            spill = _Partitions(Path(tmp) / "p", _even_splits(counts, n), stack)
                            for mpid in list(memory):
                                for res in memory.pop(mpid):
                                    spill.add(mpid, res if raw else orjson.dumps(res))
                yield from found
        if spill is None:
            for pid in sorted(memory):
                held_items = memory.pop(pid)
                if raw:
                    yield RawPatientGroup(pid, [line.rstrip(b"\r\n") for line in held_items])
                else:
                    yield canonical_group(pid, held_items)
            return
        stats.spilled = True
        for path in spill.paths:
            yield from _group_partition(path, memory_bytes, stats, raw)


def _group_partition(
    path: Path, memory_bytes: int, stats: SpillStats, raw: bool = False
) -> Iterator[PatientGroup | RawPatientGroup]:
    """The groups of one spill file, splitting it by id range first if over budget."""
    size = path.stat().st_size
    if size > _partition_bytes(memory_bytes):
        parts = _resplit(path, partition_count(size, memory_bytes))
        if parts is not None:
            path.unlink()
            for part in parts:
                yield from _group_partition(part, memory_bytes, stats, raw)
            return
    stats.partitions += 1
    stats.largest_partition_bytes = max(stats.largest_partition_bytes, size)
    # Raw lines are held, and each patient's parsed just before it is yielded: bytes are
    # not tracked by the cyclic GC, so it never walks a whole partition of parsed dicts.
    by_patient: dict[bytes, list[bytes]] = {}
    with open(path, "rb") as fh:
        for record in fh:
            key, line = _split_record(record)
            by_patient.setdefault(key, []).append(line)
    path.unlink()  # free the disk as we go
    groups = {orjson.loads(k): v for k, v in by_patient.items()}
    by_patient.clear()
    for pid in sorted(groups):
        group = RawPatientGroup(pid, groups.pop(pid))
        yield group if raw else parse_group(group)


def _resplit(path: Path, n: int) -> list[Path] | None:
    """Split a spill file into about ``n`` id ranges of even bytes; None for one patient.

    Reads the file twice: once for each patient's bytes (ids only are held), once to
    copy the lines. A range then holds about ``size / n`` bytes or a single patient.
    """
    by_key: dict[bytes, int] = {}  # JSON-encoded id -> bytes (decoded once per patient)
    with open(path, "rb") as fh:
        for record in fh:
            key = _split_record(record)[0]
            by_key[key] = by_key.get(key, 0) + len(record)
    if len(by_key) < 2:
        return None  # one patient is grouped whole, whatever its size
    ids = {key: str(orjson.loads(key)) for key in by_key}
    splits = _even_splits({ids[key]: size for key, size in by_key.items()}, max(2, n))
    with contextlib.ExitStack() as stack:
        out = _Partitions(path.with_name(path.name + ".r"), splits, stack)
        with open(path, "rb") as fh:
            for record in fh:
                out.copy(ids[_split_record(record)[0]], record)
    return out.paths
