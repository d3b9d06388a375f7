"""Bulk NDJSON on disk -> one ``PatientGroup`` per patient, with bounded memory.

A Bulk Data export is one file per resource type, so a patient's resources are spread
over many files. ``spill_groups`` reads every line once. A small export is grouped in
memory; past a byte budget every line goes to one of ``P`` partition files chosen by a
hash of the patient id (spill to disk), and partitions are grouped one at a time, so
memory is bounded by the budget plus the largest partition (about ``export size / P``).
Lines that are not JSON, resources of a type FHIR does not define, and resources that
name no patient become ``Failure`` items; the run goes on.

Plain (``.ndjson``) and gzip (``.ndjson.gz``) files are read alike. Within a group,
resources are ordered by (type, id), so every engine sees the same order.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import importlib.util
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, cast

import orjson

from fhir_adapters.fhir_keys import SUPPORTED_TYPES
from fhir_adapters.references import patient_id_of
from training.score import keys
from training.score.pipeline import Failure, PatientGroup

__all__ = [
    "DEFAULT_MEMORY_BYTES",
    "SCORED_RESOURCE_TYPES",
    "ParsedLine",
    "canonical_group",
    "is_fhir_type",
    "line_source",
    "ndjson_files",
    "open_ndjson",
    "parse_line",
    "resource_patient_id",
    "spill_groups",
]

# Resource types the record builder reads. Other FHIR R4 types (Claim, Organization,
# ...) are skipped silently; a type FHIR R4 does not define is counted and reported.
SCORED_RESOURCE_TYPES = SUPPORTED_TYPES
_DEFAULT_PARTITIONS = 64
_PATIENT_PREFIX = "Patient/"
DEFAULT_MEMORY_BYTES = 128 * 1024 * 1024  # NDJSON bytes held parsed before spilling

# (patient id, resource) on success, a Failure otherwise, None for a skipped line.
ParsedLine = tuple[str, dict[str, Any]] | Failure | None


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


def open_ndjson(path: Path) -> IO[bytes]:
    """A binary line reader for a plain or gzip NDJSON file (by content, not name)."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb")


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


@functools.cache
def is_fhir_type(rtype: str) -> bool:
    """Whether FHIR R4B defines a resource type of this name (fhir.resources' models)."""
    if not rtype.isidentifier() or not rtype[:1].isupper():
        return False
    return importlib.util.find_spec(f"fhir.resources.R4B.{rtype.lower()}") is not None


def line_source(path: Path, line_no: int) -> str:
    """How an error names a line: ``<file name>:<1-based line>``."""
    return f"{path.name}:{line_no}"


def canonical_group(patient_id: str, resources: Iterable[dict[str, Any]]) -> PatientGroup:
    """A group with resources in (type, id) order, whatever order they were read in."""
    ordered = sorted(
        resources, key=lambda r: (str(r.get("resourceType", "")), str(r.get("id", "")))
    )
    return PatientGroup(patient_id, ordered)


def _partition(patient_id: str, n: int) -> int:
    return zlib.crc32(patient_id.encode()) % n


def spill_groups(
    files: Iterable[Path],
    *,
    partitions: int = _DEFAULT_PARTITIONS,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    skip: frozenset[str] | set[str] = frozenset(),
    workdir: Path | None = None,
) -> Iterator[PatientGroup | Failure]:
    """Every patient's resources as one group (see the module docstring).

    Parsed resources stay in memory while their lines total less than ``memory_bytes``
    (one JSON parse per line); past that, everything goes to ``partitions`` spill files
    and each partition is grouped in turn. Patients in ``skip`` (already scored, for
    ``--resume``) are dropped while reading. Failures are yielded as they are found.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    with tempfile.TemporaryDirectory(prefix="moe-score-", dir=workdir) as tmp:
        memory: dict[str, list[dict[str, Any]]] = {}
        held = 0
        with contextlib.ExitStack() as stack:
            spill: list[IO[bytes]] = []
            for path in files:
                with open_ndjson(path) as fh:
                    for line_no, line in enumerate(fh, start=1):
                        parsed = parse_line(line, line_source(path, line_no))
                        if parsed is None:
                            continue
                        if isinstance(parsed, Failure):
                            yield parsed
                            continue
                        pid, resource = parsed
                        if pid in skip:
                            continue
                        if not spill:
                            memory.setdefault(pid, []).append(resource)
                            held += len(line)
                            if held > memory_bytes:  # from here on, spill to disk
                                spill = [
                                    stack.enter_context(open(Path(tmp) / f"{i:04d}", "wb"))
                                    for i in range(partitions)
                                ]
                                for mpid in list(memory):
                                    out = spill[_partition(mpid, partitions)]
                                    for res in memory.pop(mpid):
                                        out.write(mpid.encode() + b"\t" + orjson.dumps(res) + b"\n")
                            continue
                        out = spill[_partition(pid, partitions)]
                        # the raw line, prefixed by its patient: no re-serialisation
                        out.write(pid.encode() + b"\t" + line.rstrip(b"\r\n") + b"\n")
            spilled = bool(spill)
        if not spilled:
            for pid in sorted(memory):
                yield canonical_group(pid, memory.pop(pid))
            return
        for i in range(partitions):
            by_patient: dict[str, list[dict[str, Any]]] = {}
            with open(Path(tmp) / f"{i:04d}", "rb") as fh:
                for line in fh:
                    pid_raw, _, raw = line.partition(b"\t")
                    by_patient.setdefault(pid_raw.decode(), []).append(orjson.loads(raw))
            for pid in sorted(by_patient):
                yield canonical_group(pid, by_patient.pop(pid))
