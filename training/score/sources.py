"""Bulk NDJSON on disk -> one ``PatientGroup`` per patient, with bounded memory.

A Bulk Data export is one file per resource type, so a patient's resources are spread
over many files. ``spill_groups`` reads every line once and appends it to one of ``P``
partition files chosen by a hash of the patient id (spill to disk), then groups one
partition at a time in memory; memory is bounded by the largest partition, i.e. about
``export size / P``. Lines that are not JSON, resources of a type the model does not
read, and resources that name no patient become ``Failure`` items; the run goes on.

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

from fhir_adapters.references import patient_id_of
from training.score import keys
from training.score.pipeline import Failure, PatientGroup

__all__ = [
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
SCORED_RESOURCE_TYPES = frozenset(
    {
        "Patient",
        "Encounter",
        "Observation",
        "DocumentReference",
        "DiagnosticReport",
        "ImagingStudy",
        "Media",
    }
)
_DEFAULT_PARTITIONS = 64

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
    """The id of the patient a resource belongs to (its own id for a Patient)."""
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
    skip: frozenset[str] | set[str] = frozenset(),
    workdir: Path | None = None,
) -> Iterator[PatientGroup | Failure]:
    """Every patient's resources as one group (see the module docstring).

    Patients in ``skip`` (already scored, for ``--resume``) are dropped while spilling.
    Failures are yielded during the first pass, groups during the second.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    with tempfile.TemporaryDirectory(prefix="moe-score-", dir=workdir) as tmp:
        with contextlib.ExitStack() as stack:
            spill = [
                stack.enter_context(open(Path(tmp) / f"{i:04d}.ndjson", "wb"))
                for i in range(partitions)
            ]
            for path in files:
                with open_ndjson(path) as fh:
                    for line_no, line in enumerate(fh, start=1):
                        parsed = parse_line(line, line_source(path, line_no))
                        if parsed is None:
                            continue
                        if isinstance(parsed, Failure):
                            yield parsed
                            continue
                        pid = parsed[0]
                        if pid in skip:
                            continue
                        out = spill[_partition(pid, partitions)]
                        # the raw line, prefixed by its patient: no re-serialisation
                        out.write(pid.encode() + b"\t" + line.rstrip(b"\r\n") + b"\n")
        for i in range(partitions):
            by_patient: dict[str, list[dict[str, Any]]] = {}
            with open(Path(tmp) / f"{i:04d}.ndjson", "rb") as fh:
                for line in fh:
                    pid_raw, _, raw = line.partition(b"\t")
                    by_patient.setdefault(pid_raw.decode(), []).append(orjson.loads(raw))
            for pid in sorted(by_patient):
                yield canonical_group(pid, by_patient.pop(pid))
