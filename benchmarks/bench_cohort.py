"""Cohort build time on the real MIMIC-IV demo (and optionally PhysioNet 2012 set-a).

Usage: python benchmarks/bench_cohort.py [--repeats 3] [--physionet] [--export]
Prints wall time per build, admissions/s and events/s. Never asserts timings.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def _time_mimic(repeats: int) -> None:
    from training.mimic import MimicCohortConfig, build_mimic_cohort

    demo = (DATA / "mimic-iv-demo-2.2").resolve()
    times: list[float] = []
    summary: dict[str, object] = {}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            summary = build_mimic_cohort(MimicCohortConfig(demo, Path(tmp) / "cohort"))
            times.append(time.perf_counter() - t0)
    n = int(summary["admissions"])  # type: ignore[call-overload]
    events = int(summary["rows"]["events"])  # type: ignore[index]
    med = statistics.median(times)
    print(
        f"MIMIC-IV demo cohort build: median {med:.2f} s over {repeats} runs "
        f"(min {min(times):.2f}, max {max(times):.2f})"
    )
    print(
        f"  {n} admissions, {events} events -> {n / med:.1f} admissions/s, "
        f"{events / med:,.0f} events/s"
    )


def _time_export() -> None:
    from fhir_adapters.mimic_export import MimicExportConfig, export_mimic_fhir

    demo = (DATA / "mimic-iv-demo-2.2").resolve()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        counts = export_mimic_fhir(MimicExportConfig(demo, Path(tmp) / "fhir"))
        dt = time.perf_counter() - t0
    total = sum(counts.values())
    print(
        f"MIMIC-IV demo -> FHIR NDJSON export: {dt:.2f} s, {total:,} resources "
        f"({total / dt:,.0f} resources/s)"
    )


def _time_physionet() -> None:
    from training.physionet import PhysioNetConfig, build_physionet_cohort

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = build_physionet_cohort(
            PhysioNetConfig((DATA / "physionet-2012").resolve(), Path(tmp) / "cohort")
        )
        dt = time.perf_counter() - t0
    print(
        f"PhysioNet 2012 set-a cohort build: {dt:.2f} s for {summary['admissions']} stays, "
        f"{summary['rows']['events']:,} events"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--physionet", action="store_true", help="also time PhysioNet set-a")
    parser.add_argument("--export", action="store_true", help="also time the FHIR export")
    args = parser.parse_args()
    _time_mimic(args.repeats)
    if args.export:
        _time_export()
    if args.physionet:
        _time_physionet()


if __name__ == "__main__":
    main()
