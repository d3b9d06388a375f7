"""One ``moe-health score`` run: source -> engine -> outputs, write-back, job record.

The source is a Bulk NDJSON folder (``ndjson``), a FHIR server whose ``$export`` is run
first (``fhir``), or a MIMIC-IV folder (``mimic``). The run is recorded in the database
(``cds_hooks.db.Repository``: job id, status, counts, failures, model version) when it
starts and when it ends, successfully or not.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from training.score import keys
from training.score.builders import FhirRecordBuilder
from training.score.local import LocalEngine, StageTimes
from training.score.render import OutputRenderer
from training.score.run_store import RunCounts, RunStore
from training.score.sources import SCORED_RESOURCE_TYPES, ndjson_files, spill_groups

if TYPE_CHECKING:
    from training.score.scorer import ModelScorer

__all__ = ["ScoreOptions", "ScoreResult", "run_score"]

SourceKind = Literal["ndjson", "fhir", "mimic"]
EngineKind = Literal["local", "ray"]
EXPORT_DIR = "export"  # where --fhir downloads the Bulk export, under --out
EXPORT_DONE = ".export-complete"  # written once every export file is downloaded
CACHE_FILE = "embeddings.sqlite"


@dataclass(slots=True)
class ScoreOptions:
    """Everything ``moe-health score`` accepts."""

    source: SourceKind
    location: str  # folder (ndjson, mimic) or base URL (fhir)
    out: Path
    checkpoint: Path | None = None  # None: the shipped demo model
    engine: EngineKind = "local"
    address: str | None = None  # Ray cluster address; None: start a local Ray
    resume: bool = False
    write_back: bool = False
    write_back_batch: int = 100
    batch_size: int = 64
    chunk_patients: int = 256
    prediction_time: datetime | None = None
    embedding_cache: Path | None = None  # default: <out>/embeddings.sqlite
    database_url: str | None = None  # default: the configured database
    record_job: bool = True
    device: str = "auto"
    ray_actors: int = 1
    workers: int = 1  # local engine: featurisation processes
    progress: bool = True
    job_id: str = field(default_factory=lambda: f"score-{uuid.uuid4().hex[:12]}")

    def __post_init__(self) -> None:
        if self.write_back and self.source != "fhir":
            raise ValueError("--write-back needs --fhir (the server to write back to)")
        if self.source == "mimic" and self.engine == "ray":
            raise ValueError("--mimic-dir runs on the local engine only")
        if self.source == "mimic" and self.prediction_time is not None:
            raise ValueError("--prediction-time does not apply to --mimic-dir (48 h windows)")
        if self.batch_size < 1 or self.chunk_patients < 1 or self.workers < 1:
            raise ValueError(
                f"batch size, chunk size and workers must be >= 1, got {self.batch_size}, "
                f"{self.chunk_patients}, {self.workers}"
            )


@dataclass(slots=True)
class ScoreResult:
    """What the run did and where its files are."""

    job_id: str
    out: Path
    counts: RunCounts
    model_version: str
    times: StageTimes
    written_back: int = 0

    def summary(self) -> str:
        c = self.counts
        return (
            f"job {self.job_id}: {c.patients} patients ({c.patients_scored} scored, "
            f"{c.patients_failed} not scored), {c.encounters_scored} admissions, "
            f"{c.risk_assessments} RiskAssessments, {c.failures} errors "
            f"(see {self.out / keys.ERRORS_FILE}); model {self.model_version}"
        )


def _repository(opts: ScoreOptions) -> Any:
    if not opts.record_job:
        return None
    from cds_hooks.db import Repository

    return Repository.open(opts.database_url)


def run_score(opts: ScoreOptions, scorer: ModelScorer | None = None) -> ScoreResult:
    """Run the whole scoring job described by ``opts``.

    ``scorer``: an already loaded model (with its embedding cache) to reuse across runs
    in one process; by default the checkpoint of ``opts`` is loaded.
    """
    from training.score.scorer import ScorerFactory, default_checkpoint

    store = RunStore(opts.out, resume=opts.resume)
    cache = opts.embedding_cache or opts.out / CACHE_FILE
    factory = ScorerFactory(opts.checkpoint or default_checkpoint(), cache, opts.device)
    scorer = scorer if scorer is not None else factory()
    info = scorer.info
    repo = _repository(opts)
    if repo is not None:
        repo.record_job(
            opts.job_id,
            status="running",
            source=f"{opts.source}:{opts.location}",
            model_version=info.version,
            engine=opts.engine,
            details={"out": str(opts.out), "resume": opts.resume},
        )
    times = StageTimes()
    write_back = None
    client: Any = None
    try:
        if opts.source == "fhir":
            from fhir_adapters.bulk import BulkDataClient
            from fhir_adapters.client import FhirClient

            client = FhirClient(opts.location)
            export_dir = opts.out / EXPORT_DIR
            done = export_dir / EXPORT_DONE
            if not (opts.resume and done.is_file()):  # a resumed run reuses a full export
                BulkDataClient(client).export(export_dir, types=sorted(SCORED_RESOURCE_TYPES))
                done.write_text(opts.job_id)
            folder = export_dir
        else:
            folder = Path(opts.location)
        if opts.write_back:
            from training.score.writeback import WriteBack

            write_back = WriteBack(client, batch_size=opts.write_back_batch)
        render = OutputRenderer(info)
        build = FhirRecordBuilder(prediction_time=opts.prediction_time)
        with _Progress(opts.progress) as bar:
            if opts.source == "mimic":
                from training.score.mimic_source import MimicSource, prebuilt_records

                source = MimicSource(folder)
                engine = LocalEngine(
                    prebuilt_records, scorer, scorer.spec, scorer.stats, render,
                    opts.batch_size, opts.chunk_patients, times, write_back,
                )  # fmt: skip
                engine.run(source.groups(store.completed), store, bar)
            elif opts.engine == "ray":
                _run_ray(opts, folder, factory, scorer, render, build, store, bar, write_back)
            else:
                files = ndjson_files(folder)
                engine = LocalEngine(
                    build, scorer, scorer.spec, scorer.stats, render,
                    opts.batch_size, opts.chunk_patients, times, write_back, opts.workers,
                )  # fmt: skip
                engine.run(spill_groups(files, skip=store.completed), store, bar)
        counts = store.finalize()
    except BaseException as exc:
        if repo is not None:
            repo.record_job(
                opts.job_id,
                status="failed",
                n_records=store.counts.encounters_scored,
                details={"error": f"{type(exc).__name__}: {exc}"[:500], **_details(store.counts)},
            )
        raise
    finally:
        if client is not None:
            client.close()
    if repo is not None:
        repo.record_job(
            opts.job_id,
            status="succeeded",
            n_records=counts.encounters_scored,
            n_abstained=counts.abstained,
            details={
                **_details(counts),
                "written_back": write_back.written if write_back else 0,
                "errors_file": str(opts.out / keys.ERRORS_FILE),
            },
        )
    return ScoreResult(
        opts.job_id,
        opts.out,
        counts,
        info.version,
        times,
        write_back.written if write_back else 0,
    )


def _details(counts: RunCounts) -> dict[str, Any]:
    return {"counts": counts.to_dict(), "failures": counts.failures}


def _run_ray(
    opts: ScoreOptions,
    folder: Path,
    factory: Any,
    scorer: Any,
    render: OutputRenderer,
    build: FhirRecordBuilder,
    store: RunStore,
    bar: Any,
    write_back: Any,
) -> None:
    import ray

    from training.score.ray_engine import RayEngine

    started = False
    if not ray.is_initialized():
        ray.init(address=opts.address, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        gpus = float(ray.cluster_resources().get("GPU", 0.0))  # type: ignore[no-untyped-call]
        engine = RayEngine(
            build=build,
            scorer_factory=factory,
            spec=scorer.spec,
            stats=scorer.stats,
            render=render,
            image_cached=scorer.probe(),
            batch_size=opts.batch_size,
            chunk_patients=opts.chunk_patients,
            actors=max(1, min(opts.ray_actors, int(gpus))) if gpus >= 1 else opts.ray_actors,
            gpus_per_actor=1.0 if gpus >= 1 else 0.0,
            on_commit=write_back,
        )
        engine.run(ndjson_files(folder), store, bar)
    finally:
        if started:
            ray.shutdown()


class _Progress:
    """A tqdm bar counting patients (shows patients/s); a no-op when disabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return None
        from tqdm import tqdm

        self.bar = tqdm(unit=" patients", desc="scoring", dynamic_ncols=True)
        return self.bar.update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
