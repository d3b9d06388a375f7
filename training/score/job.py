"""One ``moe-health score`` run: source -> engine -> outputs, write-back, job record.

The source is a Bulk NDJSON folder (``ndjson``), a FHIR server whose ``$export`` is run
first (``fhir``), or a MIMIC-IV folder (``mimic``). The run is recorded in the database
(``cds_hooks.db.Repository``: job id, status, counts, failures, model version) when it
starts and when it ends, successfully or not.

Statuses, in the result and the job table: "succeeded"; "partial" when the scoring
finished but some RiskAssessments are not on the server yet (``--resume`` sends them
again); "failed" when the run stopped.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from training.score import keys
from training.score.builders import FhirRecordBuilder
from training.score.local import LocalEngine, StageTimes
from training.score.render import OutputRenderer
from training.score.run_store import RunCounts, RunInfo, RunStore
from training.score.sources import SCORED_RESOURCE_TYPES, ndjson_files, spill_groups

if TYPE_CHECKING:
    from training.score.scorer import ModelScorer

__all__ = [
    "ScoreOptions",
    "ScoreResult",
    "SmartOptions",
    "fhir_auth",
    "image_probe_is_safe",
    "run_score",
]

SourceKind = Literal["ndjson", "fhir", "mimic"]
EngineKind = Literal["local", "ray"]
EXPORT_DIR = "export"  # where --fhir downloads the Bulk export, under --out
EXPORT_DONE = ".export-complete"  # written once every export file is downloaded
CACHE_FILE = "embeddings.sqlite"
Outcome = Literal["succeeded", "partial"]


@dataclass(frozen=True, slots=True)
class SmartOptions:
    """SMART Backend Services for ``--fhir`` (``fhir_adapters.smart_auth``)."""

    client_id: str
    private_key: Path  # PEM (RSA or EC, unencrypted)
    token_url: str | None = None  # None: from [base]/.well-known/smart-configuration
    scope: str | None = None  # None: read everything, plus write RiskAssessments on write-back
    kid: str | None = None


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
    token: str | None = field(default=None, repr=False)  # bearer token for --fhir
    smart: SmartOptions | None = None  # SMART Backend Services for --fhir
    cache_shared: bool = False  # the embedding cache path is one file every Ray node sees
    job_id: str = field(default_factory=lambda: f"score-{uuid.uuid4().hex[:12]}")

    def __post_init__(self) -> None:
        if self.write_back and self.source != "fhir":
            raise ValueError("--write-back needs --fhir (the server to write back to)")
        if (self.token or self.smart) and self.source != "fhir":
            raise ValueError("--token and the SMART options apply to --fhir only")
        if self.token and self.smart:
            raise ValueError("give a bearer --token or the SMART options, not both")
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
    outcome: Outcome = "succeeded"

    def summary(self) -> str:
        c = self.counts
        text = (
            f"job {self.job_id}: {c.patients} patients ({c.patients_scored} scored, "
            f"{c.patients_failed} not scored), {c.encounters_scored} admissions, "
            f"{c.risk_assessments} RiskAssessments, {c.failures} errors "
            f"(see {self.out / keys.ERRORS_FILE}); model {self.model_version}"
        )
        if c.write_back_pending:
            text += (
                f"; PARTIAL: {c.write_back_pending} RiskAssessments not written back, "
                "rerun with --resume to send them"
            )
        return text


def _repository(opts: ScoreOptions) -> Any:
    if not opts.record_job:
        return None
    from cds_hooks.db import Repository

    return Repository.open(opts.database_url)


def run_score(opts: ScoreOptions, scorer: ModelScorer | None = None) -> ScoreResult:
    """Run the whole scoring job described by ``opts``.

    ``scorer``: an already loaded model (with its embedding cache) to reuse across runs
    in one process; by default the checkpoint of ``opts`` is loaded. Raises
    ``ResumeMismatchError`` (before touching anything) when ``--resume`` would continue
    a run of another model or source.
    """
    from training.score.scorer import ScorerFactory, default_checkpoint

    cache = opts.embedding_cache or opts.out / CACHE_FILE
    factory = ScorerFactory(opts.checkpoint or default_checkpoint(), cache, opts.device)
    scorer = scorer if scorer is not None else factory()
    info = scorer.info
    store = RunStore(opts.out, resume=opts.resume, run=RunInfo(info.version, _source_label(opts)))
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
            client = _fhir_client(opts)
            folder = _fetch_export(opts, client)
        else:
            folder = Path(opts.location)
        if opts.write_back:
            from training.score.writeback import WriteBack

            write_back = WriteBack(client, batch_size=opts.write_back_batch)
            write_back.retry(store)  # what an earlier run of this --out failed to send
        _score(opts, folder, factory, scorer, store, times, write_back)
        counts = store.finalize()
    except BaseException as exc:
        if repo is not None:
            repo.record_job(
                opts.job_id,
                status="failed",
                n_records=store.counts.encounters_scored,
                n_abstained=store.counts.abstained,
                details={
                    "outcome": "failed",
                    "error": f"{type(exc).__name__}: {exc}"[:500],
                    **_details(store.counts),
                },
            )
        raise
    finally:
        if client is not None:
            client.close()
    outcome: Outcome = "partial" if counts.write_back_pending else "succeeded"
    written = write_back.written if write_back else 0
    if repo is not None:
        repo.record_job(
            opts.job_id,
            status=outcome,
            n_records=counts.encounters_scored,
            n_abstained=counts.abstained,
            details={
                **_details(counts),
                "outcome": outcome,
                "written_back": written,
                "write_back_pending": counts.write_back_pending,
                "errors_file": str(opts.out / keys.ERRORS_FILE),
                "times": _times(times),
            },
        )
    return ScoreResult(opts.job_id, opts.out, counts, info.version, times, written, outcome)


def _source_label(opts: ScoreOptions) -> str:
    """How the ledger names the source: a resumed run must read the same one."""
    if opts.source == "fhir":
        return f"fhir:{opts.location.rstrip('/')}"
    return f"{opts.source}:{Path(opts.location).resolve()}"


def _score(
    opts: ScoreOptions,
    folder: Path,
    factory: Any,
    scorer: ModelScorer,
    store: RunStore,
    times: StageTimes,
    write_back: Any,
) -> None:
    """Run the engine ``opts`` asks for over ``folder``, committing into ``store``."""
    render = OutputRenderer(scorer.info)
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
            _run_ray(opts, folder, factory, scorer, render, build, store, bar, write_back, times)
        else:
            files = ndjson_files(folder)
            engine = LocalEngine(
                build, scorer, scorer.spec, scorer.stats, render,
                opts.batch_size, opts.chunk_patients, times, write_back, opts.workers,
            )  # fmt: skip
            # Raw lines, parsed one patient at a time as it is featurised (in a worker
            # process, when there are workers: bytes are cheaper to send than dicts), so
            # a chunk of patients waiting to be scored is held as bytes, not dicts.
            groups = spill_groups(files, skip=store.completed, raw=True)
            engine.run(groups, store, bar)


def fhir_auth(opts: ScoreOptions) -> Any:
    """The ``auth`` for ``FhirClient``: a bearer token, SMART Backend Services, or None.

    ``FhirClient`` turns a token string into a bearer header (the CLI reads it from
    ``--token`` or ``FHIR_TOKEN``, like ``moe-health fhir-records``); SMART uses
    ``fhir_adapters.smart_auth`` as is, its default scope adding RiskAssessment writes
    when the run writes back.
    """
    if opts.smart is not None:
        from fhir_adapters.smart_auth import SmartBackendAuth, discover_token_endpoint

        smart = opts.smart
        scope = smart.scope or (
            "system/*.read system/RiskAssessment.write" if opts.write_back else "system/*.read"
        )
        return SmartBackendAuth(
            token_url=smart.token_url or discover_token_endpoint(opts.location),
            client_id=smart.client_id,
            private_key_pem=smart.private_key.read_bytes(),
            scope=scope,
            kid=smart.kid,
        )
    return opts.token or None


def _fhir_client(opts: ScoreOptions) -> Any:
    from fhir_adapters.client import FhirClient

    return FhirClient(opts.location, auth=fhir_auth(opts))


def _fetch_export(opts: ScoreOptions, client: Any) -> Path:
    """Run ``$export`` into ``<out>/export``; a resumed run reuses a complete export.

    Any other time the folder is emptied first, marker included: the downloaded file
    names (``<Type>.<n>.ndjson``) need not match the previous export's, and one of its
    files left behind would be scored as if the server had sent it.
    """
    from fhir_adapters.bulk import BulkDataClient

    export_dir = opts.out / EXPORT_DIR
    done = export_dir / EXPORT_DONE
    if opts.resume and done.is_file():
        return export_dir
    if export_dir.exists():
        shutil.rmtree(export_dir)
    BulkDataClient(client).export(export_dir, types=sorted(SCORED_RESOURCE_TYPES))
    done.write_text(opts.job_id)
    return export_dir


def _details(counts: RunCounts) -> dict[str, Any]:
    return {"counts": counts.to_dict(), "failures": counts.failures}


def _times(times: StageTimes) -> dict[str, float]:
    return {
        "read_featurise_s": round(times.read_featurise, 3),
        "model_s": round(times.model, 3),
        "write_s": round(times.write, 3),
    }


def image_probe_is_safe(
    node_ips: Sequence[str], driver_ip: str, *, client_mode: bool, cache_shared: bool
) -> bool:
    """Whether Ray featurisers may ask the driver's embedding cache which images it holds.

    A featuriser skips decoding an image the cache already embeds, trusting the scoring
    actor to find the vector in *its* cache. That holds only if they read one file:
    every node runs on the driver's machine (not through Ray Client, whose driver is
    elsewhere), or ``--embedding-cache`` is on a file system all nodes share
    (``--embedding-cache-shared``). Otherwise no probe: images are always decoded and
    each actor's cache does its own hits and misses.
    """
    if cache_shared:
        return True
    return not client_mode and bool(node_ips) and all(ip == driver_ip for ip in node_ips)


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
    times: StageTimes,
) -> None:
    import ray

    from training.score.ray_engine import RayEngine

    started = False
    if not ray.is_initialized():
        ray.init(address=opts.address, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        gpus = float(ray.cluster_resources().get("GPU", 0.0))  # type: ignore[no-untyped-call]
        alive = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
        nodes = [str(n["NodeManagerAddress"]) for n in alive]
        safe = image_probe_is_safe(
            nodes,
            ray.util.get_node_ip_address(),  # type: ignore[no-untyped-call]
            client_mode=ray.util.client.ray.is_connected(),  # type: ignore[no-untyped-call]
            cache_shared=opts.cache_shared,
        )
        engine = RayEngine(
            build=build,
            scorer_factory=factory,
            spec=scorer.spec,
            stats=scorer.stats,
            render=render,
            image_cached=scorer.probe() if safe else None,
            batch_size=opts.batch_size,
            chunk_patients=opts.chunk_patients,
            actors=max(1, min(opts.ray_actors, int(gpus))) if gpus >= 1 else opts.ray_actors,
            gpus_per_actor=1.0 if gpus >= 1 else 0.0,
            on_commit=write_back,
        )
        engine.run(ndjson_files(folder), store, bar, times)
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
