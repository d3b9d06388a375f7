"""The ``moe-health score`` command (registered by ``training.cli``).

Thin: options are parsed here, the work happens in ``training.score.job.run_score``,
imported inside the command so ``moe-health --help`` stays fast.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer

__all__ = ["score"]

_HELP = """Score every inpatient admission of a FHIR Bulk export (or MIMIC-IV) in batch.

Exactly one source: --ndjson DIR (a Bulk Data export on disk: *.ndjson or *.ndjson.gz,
one file or more per resource type), --fhir URL (runs a system-level $export on that
server through the Bulk Data client, downloads it under OUT/export, then scores it), or
--mimic-dir DIR (MIMIC-IV hosp/ + icu/ csv.gz, scored directly; proves parity with the
FHIR path).

Writes to --out: RiskAssessment.ndjson (one FHIR R4 RiskAssessment per scored admission
and task), scores.parquet and scores.csv (one row per admission and task, abstentions
included), errors.jsonl (one line per unusable line, resource, patient or admission,
with the reason), summary.json (counts), ledger.jsonl and parts/ (progress, for
--resume), embeddings.sqlite (note/image embedding cache, reused by the next run). The
run is recorded in the database (job id, status, counts, failures, model version).

Memory stays bounded: the export is grouped per patient with a spill to disk, and
patients are scored and committed in chunks. A bad line or an unscorable patient is
reported in errors.jsonl and the run goes on. --resume continues an interrupted run
into the same --out without scoring anyone twice.

Ray: --engine ray runs the same stages on Ray Data (shards read and patients
featurised in CPU tasks, scoring in an actor pool with one GPU per actor when the
cluster has GPUs); results are identical to --engine local. Without --address a local
Ray is started. For a cluster, start it (`ray start --head` on one node, `ray start
--address=HEAD:6379` on the others, or KubeRay) and pass --address HEAD:6379 (or
--address auto on a node of the cluster, or set RAY_ADDRESS); every node needs this
package installed and the export, checkpoint and --out paths on a shared file system.
"""


def score(
    ndjson: Path | None = typer.Option(
        None,
        "--ndjson",
        help="Folder of a FHIR Bulk Data export: *.ndjson and/or *.ndjson.gz files "
        "(plain or gzip, found recursively).",
    ),
    fhir: str | None = typer.Option(
        None,
        "--fhir",
        help="FHIR server base URL: run a system-level Bulk Data $export there, download "
        "the files under OUT/export, then score them. Needed for --write-back.",
    ),
    mimic_dir: Path | None = typer.Option(
        None,
        "--mimic-dir",
        help="MIMIC-IV folder (hosp/ and icu/ csv.gz, e.g. the MIMIC-IV demo): score its "
        "admissions directly, without FHIR (local engine only).",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output folder (created; reused with --resume)."
    ),
    checkpoint: Path | None = typer.Option(
        None,
        "--checkpoint",
        help="Model checkpoint folder (config.json + model.safetensors). Default: the "
        "synthetic demo model shipped with the package (not for clinical use).",
    ),
    engine: str = typer.Option(
        "local",
        "--engine",
        help="'local' (one process, streaming) or 'ray' (Ray Data; see --address).",
    ),
    address: str | None = typer.Option(
        None,
        "--address",
        help="Ray cluster address for --engine ray, e.g. 'HEAD:6379' or 'auto'. "
        "Default: start a local Ray on this machine.",
    ),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        help="Local engine: featurise in this many worker processes (about one per spare "
        "CPU core) while the main process reads, scores and writes. Same results.",
    ),
    ray_actors: int = typer.Option(
        1, "--ray-actors", min=1, help="Scoring actors for --engine ray (one GPU each)."
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue an interrupted run in --out: patients already committed to its "
        "ledger are skipped, nothing is scored or reported twice.",
    ),
    write_back: bool = typer.Option(
        False,
        "--write-back",
        help="With --fhir: PUT the RiskAssessments back to the server in transaction "
        "Bundles (bounded, retried; deterministic ids, so reruns do not duplicate).",
    ),
    write_back_batch: int = typer.Option(
        100, "--write-back-batch", min=1, help="RiskAssessments per transaction Bundle."
    ),
    prediction_time: datetime | None = typer.Option(
        None,
        "--prediction-time",
        help="Score on what was known at this time (ISO 8601, UTC if no zone), e.g. now "
        "for current inpatients; each admission then uses at most its first 48 h. "
        "Default: every admission at the end of its first 48 h.",
    ),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Admissions per model call."),
    chunk: int = typer.Option(
        256,
        "--chunk",
        min=1,
        help="Patients per committed chunk (memory bound and --resume granularity).",
    ),
    embedding_cache: Path | None = typer.Option(
        None,
        "--embedding-cache",
        help="SQLite file of note/image embeddings keyed by encoder + content hash "
        "(default OUT/embeddings.sqlite); point nightly runs at one file.",
    ),
    database_url: str | None = typer.Option(
        None,
        "--database-url",
        help="SQLAlchemy URL where the job is recorded (default: MOE_HEALTH_DATABASE_URL "
        "or the SQLite file of the service).",
    ),
    device: str = typer.Option(
        "auto", "--device", help="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1' ..."
    ),
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help="Show a progress bar with patients/s."
    ),
) -> None:
    from training.score.job import ScoreOptions, run_score

    sources = [(k, v) for k, v in (("ndjson", ndjson), ("fhir", fhir), ("mimic", mimic_dir)) if v]
    if len(sources) != 1:
        raise typer.BadParameter("give exactly one of --ndjson, --fhir, --mimic-dir")
    kind, location = sources[0]
    if engine not in ("local", "ray"):
        raise typer.BadParameter(f"--engine must be 'local' or 'ray', got {engine!r}")
    if prediction_time is not None and prediction_time.tzinfo is None:
        prediction_time = prediction_time.replace(tzinfo=UTC)
    try:
        opts = ScoreOptions(
            source=kind,  # type: ignore[arg-type]
            location=str(location),
            out=out,
            checkpoint=checkpoint,
            engine=engine,  # type: ignore[arg-type]
            address=address,
            resume=resume,
            write_back=write_back,
            write_back_batch=write_back_batch,
            batch_size=batch_size,
            chunk_patients=chunk,
            prediction_time=prediction_time,
            embedding_cache=embedding_cache,
            database_url=database_url,
            device=device,
            ray_actors=ray_actors,
            workers=workers,
            progress=progress,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    result = run_score(opts)
    typer.echo(result.summary())


# One line per paragraph: the help renderer wraps to the terminal itself.
score.__doc__ = "\n\n".join(" ".join(par.split()) for par in _HELP.split("\n\n"))
