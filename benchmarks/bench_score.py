"""Batch scoring throughput: ``moe-health score`` on a synthetic Bulk export.

    python benchmarks/bench_score.py                      # 10,000 patients (generated)
    python benchmarks/bench_score.py --patients 500       # quicker
    python benchmarks/bench_score.py --export DIR         # reuse an export

Figures, each stage in its own process (so peak RSS is that stage's own):

* floor: bare ``orjson.loads`` of every line of every file (resources/s, patients/s);
* read + featurise: the scorer's streaming grouping, FHIR -> PatientRecord assembly and
  featurisation (no model), over the whole export, in one process and with ``--workers``
  featurising processes (default: one per CPU; peak RSS is the main process's);
* model: encoders + MoE-Health on the feature rows of ``--model-patients`` patients, cold
  (empty embedding cache) and warm (the nightly rerun: every note cached);
* end to end: ``run_score`` (local engine) on ``--e2e-patients`` patients, split by stage;
* peer: ``fhiry`` turning NDJSON into a DataFrame, on a sample of ``--fhiry-lines`` lines
  (it normalises line by line with pandas; the full export would take hours).

Peak memory is ``ru_maxrss`` of each stage's process. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _count_patients(files: list[Path]) -> int:
    return sum(1 for f in files if f.name.startswith("Patient.") for _ in _lines(f))


def _lines(path: Path) -> Any:
    import gzip

    with open(path, "rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    with gzip.open(path, "rb") if gz else open(path, "rb") as fh:
        yield from fh


def _files(export: Path) -> list[Path]:
    names = (".ndjson", ".ndjson.gz")
    return sorted(p for p in export.rglob("*") if p.is_file() and p.name.endswith(names))


def stage_orjson(export: Path) -> dict[str, Any]:
    import orjson  # nothing else imported: the floor process stays bare

    files = _files(export)
    t0 = time.perf_counter()
    n = size = 0
    for f in files:
        for line in _lines(f):
            orjson.loads(line)
            n += 1
            size += len(line)
    secs = time.perf_counter() - t0
    return {"resources": n, "bytes": size, "seconds": secs, "patients": _count_patients(files)}


def stage_featurise(export: Path, workers: int = 1) -> dict[str, Any]:
    """Read + group + records + features, in one process or with ``workers`` processes
    featurising (as ``moe-health score --workers``)."""
    import multiprocessing
    from concurrent.futures import Future, ProcessPoolExecutor

    from moe_core.feature_catalog import DEFAULT_SPEC
    from moe_core.feature_spec import NormStats
    from training.score.builders import FhirRecordBuilder
    from training.score.local import Featurised, featurise_groups
    from training.score.pipeline import PatientGroup, RawPatientGroup
    from training.score.sources import ndjson_files, spill_groups

    stats = NormStats.identity(DEFAULT_SPEC)
    build = FhirRecordBuilder()
    total = Featurised()
    read_failures = 0
    pool = (
        ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        if workers > 1
        else None
    )
    if pool is not None:  # start the workers before the clock
        list(pool.map(abs, range(workers)))
    t0 = time.perf_counter()
    pending: list[Future[Featurised]] = []
    batch: list[PatientGroup | RawPatientGroup] = []
    # as the local engine: raw lines, parsed per patient by whoever featurises it
    for item in spill_groups(ndjson_files(export), raw=True):
        if not isinstance(item, PatientGroup | RawPatientGroup):
            read_failures += 1
            continue
        if pool is None:
            total.extend(featurise_groups([item], build, DEFAULT_SPEC, stats))
            continue
        batch.append(item)
        if len(batch) >= 32:
            pending.append(pool.submit(featurise_groups, batch, build, None, stats))
            batch = []
        if len(pending) >= 4 * workers:  # bounded memory: wait for the oldest
            total.extend(pending.pop(0).result())
    if pool is not None:
        if batch:
            pending.append(pool.submit(featurise_groups, batch, build, None, stats))
        for future in pending:
            total.extend(future.result())
        pool.shutdown()
    secs = time.perf_counter() - t0
    return {
        "patients": len(total.patient_ids),
        "resources": total.resources,
        "admissions": len(total.rows),
        "failures": len(total.failures) + read_failures,
        "seconds": secs,
        "workers": workers,
    }


def _subset(export: Path, n_patients: int, out: Path) -> Path:
    """The first ``n_patients`` patients of an export (all their resources)."""
    import orjson

    from training.score.sources import ndjson_files, resource_patient_id

    files = ndjson_files(export)
    keep: set[str] = set()
    for f in files:
        if f.name.startswith("Patient."):
            for line in _lines(f):
                if len(keep) >= n_patients:
                    break
                keep.add(str(orjson.loads(line)["id"]))
    out.mkdir(parents=True, exist_ok=True)
    for f in files:
        with open(out / f.name.removesuffix(".gz"), "wb") as dst:
            for line in _lines(f):
                if resource_patient_id(orjson.loads(line)) in keep:
                    dst.write(line.rstrip(b"\n") + b"\n")
    return out


def stage_model(export: Path, checkpoint: Path, n_patients: int) -> dict[str, Any]:
    from training.score.builders import FhirRecordBuilder
    from training.score.pipeline import PatientGroup, featurise_records, group_records
    from training.score.scorer import ScorerFactory
    from training.score.sources import ndjson_files, spill_groups

    with tempfile.TemporaryDirectory() as tmp:
        sub = _subset(export, n_patients, Path(tmp) / "subset")
        t_load = time.perf_counter()
        scorer = ScorerFactory(checkpoint, Path(tmp) / "cache.sqlite", "auto")()
        load = time.perf_counter() - t_load
        rows = []
        for item in spill_groups(ndjson_files(sub)):
            if isinstance(item, PatientGroup):
                records, _ = group_records(item, FhirRecordBuilder())
                rows.extend(featurise_records(records, scorer.spec, scorer.stats)[0])
        timings = []
        for _ in range(2):  # cold cache, then the nightly rerun with every note cached
            t0 = time.perf_counter()
            for start in range(0, len(rows), 64):
                scorer.score(rows[start : start + 64])
            timings.append(time.perf_counter() - t0)
        return {
            "patients": n_patients,
            "admissions": len(rows),
            "notes": sum(1 for r in rows if r.text),
            "load_seconds": load,
            "cold_seconds": timings[0],
            "warm_seconds": timings[1],
            "device": str(scorer.device),
            "model_version": scorer.info.version,
        }


def stage_e2e(export: Path, checkpoint: Path, n_patients: int) -> dict[str, Any]:
    from training.score.job import ScoreOptions, run_score

    with tempfile.TemporaryDirectory() as tmp:
        sub = _subset(export, n_patients, Path(tmp) / "subset")
        opts = ScoreOptions(
            source="ndjson",
            location=str(sub),
            out=Path(tmp) / "out",
            checkpoint=checkpoint,
            record_job=False,
            progress=False,
        )
        t0 = time.perf_counter()
        result = run_score(opts)
        secs = time.perf_counter() - t0
        return {
            "patients": result.counts.patients,
            "resources": result.counts.resources,
            "risk_assessments": result.counts.risk_assessments,
            "seconds": secs,
            "read_featurise": result.times.read_featurise,
            "model": result.times.model,
            "write": result.times.write,
        }


def stage_fhiry(export: Path, n_lines: int) -> dict[str, Any]:
    from fhiry.fhirndjson import Fhirndjson

    files = _files(export)
    total = sum(1 for f in files for _ in _lines(f))
    with tempfile.TemporaryDirectory() as tmp:
        n = 0
        for f in files:  # the same type mix as the export, scaled to n_lines
            quota = max(1, n_lines * _file_lines(f) // total)
            with open(Path(tmp) / f.name.removesuffix(".gz"), "wb") as dst:
                share = 0
                for line in _lines(f):
                    if share >= quota:
                        break
                    dst.write(line)
                    share += 1
                n += share
        reader = Fhirndjson()
        reader.folder = tmp
        devnull = open(os.devnull, "w")  # noqa: SIM115 - silence its tqdm bars
        stderr, sys.stderr = sys.stderr, devnull
        try:
            t0 = time.perf_counter()
            reader.process_source()
            secs = time.perf_counter() - t0
        finally:
            sys.stderr = stderr
            devnull.close()
        rows = 0 if reader.df is None else len(reader.df)
        return {"resources": n, "rows": rows, "seconds": secs}


def _file_lines(path: Path) -> int:
    return sum(1 for _ in _lines(path))


def _run_stage(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"stage {args[:2]} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _generate(n: int, out: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "moe_health", "synth", "-n", str(n), "--out", str(out),
         "--no-images", "--no-progress", "--seed", "0"],
        check=True, capture_output=True, cwd=REPO,
    )  # fmt: skip
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--export", type=Path, default=None)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--model-patients", type=int, default=100)
    parser.add_argument("--e2e-patients", type=int, default=100)
    parser.add_argument("--fhiry-lines", type=int, default=5_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.stage is not None:
        export = args.export
        if args.stage == "orjson":
            out = stage_orjson(export)
        elif args.stage == "featurise":
            out = stage_featurise(export, args.workers)
        elif args.stage == "model":
            out = stage_model(export, args.checkpoint, args.model_patients)
        elif args.stage == "e2e":
            out = stage_e2e(export, args.checkpoint, args.e2e_patients)
        else:
            out = stage_fhiry(export, args.fhiry_lines)
        out["peak_mib"] = _peak_mib()
        print(json.dumps(out))
        return

    if args.report is not None:  # figures saved by earlier --stage runs, one JSON per file
        names = ("orjson", "featurise1", "featuriseN", "model", "e2e", "fhiry")
        _report(*(json.loads((args.report / f"{n}.json").read_text()) for n in names))
        return

    from training.score.scorer import default_checkpoint

    checkpoint = args.checkpoint or default_checkpoint()
    with tempfile.TemporaryDirectory() as tmp:
        export = args.export
        if export is None:
            export = Path(tmp) / "export"
            secs = _generate(args.patients, export)
            print(f"generated {args.patients} synthetic patients in {secs:.0f} s")
        common = ["--export", str(export), "--checkpoint", str(checkpoint)]
        floor = _run_stage(["--stage", "orjson", *common])
        feat = _run_stage(["--stage", "featurise", *common, "--workers", "1"])
        par = _run_stage(["--stage", "featurise", *common, "--workers", str(args.workers)])
        model = _run_stage(
            ["--stage", "model", *common, "--model-patients", str(args.model_patients)]
        )
        e2e = _run_stage(["--stage", "e2e", *common, "--e2e-patients", str(args.e2e_patients)])
        peer = _run_stage(["--stage", "fhiry", *common, "--fhiry-lines", str(args.fhiry_lines)])
    _report(floor, feat, par, model, e2e, peer)


def _report(
    floor: dict[str, Any],
    feat: dict[str, Any],
    par: dict[str, Any],
    model: dict[str, Any],
    e2e: dict[str, Any],
    peer: dict[str, Any],
) -> None:
    floor_rate = floor["resources"] / floor["seconds"]
    feat_rate = feat["resources"] / feat["seconds"]
    fhiry_rate = peer["resources"] / peer["seconds"]
    print(
        f"export: {floor['patients']} patients, {floor['resources']} resources, "
        f"{floor['bytes'] / 2**20:.0f} MiB NDJSON; CPUs: {os.cpu_count()}"
    )
    print(f"{'stage':34} {'resources/s':>12} {'patients/s':>11} {'peak MiB':>9}")
    print(
        f"{'bare orjson.loads (floor)':34} {floor_rate:12,.0f} "
        f"{floor['patients'] / floor['seconds']:11,.1f} {floor['peak_mib']:9,.0f}"
    )
    print(
        f"{'score: read + featurise':34} {feat_rate:12,.0f} "
        f"{feat['patients'] / feat['seconds']:11,.1f} {feat['peak_mib']:9,.0f}"
    )
    par_rate = par["resources"] / par["seconds"]
    label = f"  ... with {par['workers']} worker processes"
    print(
        f"{label:34} {par_rate:12,.0f} "
        f"{par['patients'] / par['seconds']:11,.1f} {par['peak_mib']:9,.0f}"
    )
    print(
        f"{'fhiry -> DataFrame (sample)':34} {fhiry_rate:12,.0f} {'':>11} {peer['peak_mib']:9,.0f}"
    )
    print(
        f"featurise / orjson = {feat_rate / floor_rate:.2f} one process, "
        f"{par_rate / floor_rate:.2f} with {par['workers']} workers (goal >= 0.5); "
        f"featurise / fhiry = {feat_rate / fhiry_rate:.0f}x (goal >= 5)"
    )
    per = model["patients"]
    print(
        f"model ({model['device']}, {model['model_version']}): {per} patients, "
        f"{model['admissions']} admissions, {model['notes']} notes; cold cache "
        f"{per / model['cold_seconds']:.1f} patients/s, warm cache (nightly rerun) "
        f"{per / model['warm_seconds']:.1f} patients/s; load {model['load_seconds']:.1f} s; "
        f"peak {model['peak_mib']:.0f} MiB"
    )
    print(
        f"end to end (run_score, {e2e['patients']} patients): "
        f"{e2e['patients'] / e2e['seconds']:.1f} patients/s, "
        f"{e2e['resources'] / e2e['seconds']:,.0f} resources/s; read+featurise "
        f"{e2e['read_featurise']:.1f} s, model {e2e['model']:.1f} s, write {e2e['write']:.1f} s; "
        f"peak {e2e['peak_mib']:.0f} MiB"
    )


if __name__ == "__main__":
    main()
