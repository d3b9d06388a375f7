"""NDJSON -> PatientRecord throughput on the Synthea R4 data, next to its floors.

The 40 Synthea transaction bundles in ``../shared/data/synthea-r4`` are written as a
Bulk-style NDJSON export (one file per resource type) in a temporary folder, repeated
``--repeat`` times with fresh UUIDs so every copy is a distinct patient. Then, on the
same lines:

* bare ``orjson.loads`` of every line (the physical floor of any JSON reader), and of
  only the lines of the types the assembler keeps (the pipeline skips the others
  unparsed, so "pipeline rate over all lines / orjson rate" flatters it; the
  kept-lines ratio compares like with like);
* ``fhir.resources`` R4B model validation (on a sample of lines: it is slow);
* the full pipeline: ``fhir_adapters.ndjson.records_from_ndjson`` (scan, group by
  patient, parse, build records).

Run: ``python benchmarks/bench_fhir_adapters.py [--repeat 10]``. Prints figures only.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import orjson

from fhir_adapters.fhir_keys import SUPPORTED_TYPES
from fhir_adapters.ndjson import NdjsonReport, ndjson_files, records_from_ndjson
from fhir_adapters.record import BuildReport

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "synthea-r4"
# a UUID's first 31 characters; the last 5 are replaced by the copy number
_UUID = re.compile(rb"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{7})[0-9a-f]{5}")


def write_export(out: Path, repeat: int) -> int:
    """Write ``repeat`` copies of the Synthea bundles as NDJSON; returns the line count."""
    by_type: dict[str, list[bytes]] = defaultdict(list)
    for path in sorted(DATA.glob("*.json")):
        bundle = orjson.loads(path.read_bytes())
        for entry in bundle["entry"]:
            res = entry["resource"]
            by_type[res["resourceType"]].append(orjson.dumps(res))
    n = 0
    for rtype, lines in by_type.items():
        with (out / f"{rtype}.000.ndjson").open("wb") as fh:
            for k in range(repeat):
                replacement = rb"\g<1>" + f"-{k:04d}".encode()
                for line in lines:
                    fh.write(_UUID.sub(replacement, line) + b"\n")
                    n += 1
    return n


def _type_of(path: Path) -> str:
    return path.name.split(".", 1)[0]  # "<Type>.000.ndjson", as write_export names them


def bench_orjson(folder: Path, types: Iterable[str] | None = None) -> tuple[int, float]:
    """Bare ``orjson.loads`` over the files (of ``types`` only, when given)."""
    wanted = None if types is None else frozenset(types)
    paths = [p for p in ndjson_files(folder) if wanted is None or _type_of(p) in wanted]
    t0 = time.perf_counter()
    n = 0
    for path in paths:
        with path.open("rb") as fh:
            for line in fh:
                orjson.loads(line)
                n += 1
    return n, time.perf_counter() - t0


def bench_fhir_resources(folder: Path, sample: int) -> tuple[int, float]:
    from fhir.resources.R4B import get_fhir_model_class

    lines: list[bytes] = []
    for path in ndjson_files(folder):
        with path.open("rb") as fh:
            for i, line in enumerate(fh):
                if i >= sample // 16:
                    break
                lines.append(line)
    t0 = time.perf_counter()
    for line in lines:
        d = orjson.loads(line)
        get_fhir_model_class(d["resourceType"]).model_validate(d)
    return len(lines), time.perf_counter() - t0


def bench_pipeline(folder: Path) -> tuple[int, int, float, NdjsonReport]:
    report = NdjsonReport()
    build = BuildReport()
    t0 = time.perf_counter()
    records = sum(1 for _ in records_from_ndjson(folder, ndjson_report=report, build_report=build))
    return records, report.lines, time.perf_counter() - t0, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="copies of the 40 bundles")
    parser.add_argument("--sample", type=int, default=4000, help="lines validated with R4B")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fhir-") as tmp:
        folder = Path(tmp)
        lines = write_export(folder, args.repeat)
        size = sum(p.stat().st_size for p in ndjson_files(folder)) / 1e6
        print(f"export: {lines:,} lines, {size:,.0f} MB, {args.repeat} x 40 Synthea patients")
        n, t = bench_orjson(folder)
        print(f"orjson.loads            : {n / t:12,.0f} resources/s  ({t:.2f} s)")
        orjson_rate = n / t
        n_kept, t_kept = bench_orjson(folder, SUPPORTED_TYPES)
        orjson_kept_rate = n_kept / t_kept
        print(f"orjson.loads, kept types: {orjson_kept_rate:12,.0f} resources/s  "
              f"({n_kept:,} lines, {t_kept:.2f} s)")  # fmt: skip
        n, t = bench_fhir_resources(folder, args.sample)
        print(f"fhir.resources R4B      : {n / t:12,.0f} resources/s  ({n} lines sampled)")
        recs, n, t, report = bench_pipeline(folder)
        print(f"NDJSON -> PatientRecord : {n / t:12,.0f} resources/s  {recs / t:,.1f} records/s"
              f"  ({recs} records, {t:.2f} s)")  # fmt: skip
        kept = sum(report.kept.values())
        print(f"  of which kept for the assembler: {kept:,} lines "
              f"({kept / t:,.0f} kept resources/s); skipped unparsed: "
              f"{sum(report.skipped_types.values()):,}")  # fmt: skip
        print(f"pipeline / orjson rate  : {n / t / orjson_rate:.2f} (goal >= 0.5; all lines)")
        print(f"  kept lines only       : {kept / t / orjson_kept_rate:.2f} "
              f"(pipeline kept resources/s / orjson on the same kept lines)")  # fmt: skip


if __name__ == "__main__":
    main()
