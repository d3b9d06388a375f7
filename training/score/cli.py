"""The ``moe-health score`` command (registered by ``training.cli``).

Thin: options are parsed here, the work happens in ``training.score.job.run_score``,
imported inside the command so ``moe-health --help`` stays fast.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from training.score.job import SmartOptions

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

--fhir authenticates with a bearer --token (or FHIR_TOKEN) or with SMART Backend
Services (--smart-client-id and --smart-key; the token endpoint is discovered from the
server's .well-known/smart-configuration unless --smart-token-url is given). A run
whose write-back could not send everything ends "partial" (exit code 1): --resume sends
the rest.

Ray: --engine ray runs the same stages on Ray Data (shards read and patients
featurised in CPU tasks, scoring in an actor pool with one GPU per actor when the
cluster has GPUs); results are identical to --engine local. --address is passed to
ray.init: without it Ray joins the cluster named by RAY_ADDRESS or one already running
on this machine, else starts a local one. For a cluster, start it (`ray start --head`
on one node, `ray start --address=HEAD:6379` on the others, or KubeRay) and run the
command on one of its nodes with --address auto (or HEAD:6379, the head's GCS
address). From outside the cluster use Ray Client, --address ray://HEAD:10001, or
better submit the command as a Ray job (`ray job submit --address
http://HEAD:8265 -- moe-health score ...`). Every node needs this package installed
and the export and checkpoint at the same paths (a shared or mounted file system);
pass --embedding-cache-shared only when the cache file is on such a file system too.
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
        help="Ray address for --engine ray (ray.init semantics): 'auto' or 'HEAD:6379' "
        "on a node of the cluster, 'ray://HEAD:10001' (Ray Client) from outside it. "
        "Default: RAY_ADDRESS, a Ray running on this machine, else a new local Ray.",
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
    embedding_cache_shared: bool = typer.Option(
        False,
        "--embedding-cache-shared",
        help="--engine ray: the --embedding-cache file is on a file system every node "
        "shares, so featurisers may skip decoding images it already embeds. Without it "
        "(or a Ray on this machine only) every node's actors keep their own cache.",
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="FHIR_TOKEN",
        help="Bearer token for --fhir (or the FHIR_TOKEN environment variable).",
    ),
    smart_client_id: str | None = typer.Option(
        None,
        "--smart-client-id",
        help="--fhir with SMART Backend Services: the client id registered with the server.",
    ),
    smart_key: Path | None = typer.Option(
        None,
        "--smart-key",
        help="PEM private key (RSA for RS384, EC P-384 for ES384) of --smart-client-id.",
    ),
    smart_token_url: str | None = typer.Option(
        None,
        "--smart-token-url",
        help="SMART token endpoint. Default: from [--fhir]/.well-known/smart-configuration.",
    ),
    smart_scope: str | None = typer.Option(
        None,
        "--smart-scope",
        help="Scopes to ask for. Default: 'system/*.read', plus "
        "'system/RiskAssessment.write' with --write-back.",
    ),
    smart_kid: str | None = typer.Option(
        None,
        "--smart-kid",
        help="Key id (JWT 'kid' header) of --smart-key, if the server needs it.",
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
    from training.score.run_store import ResumeMismatchError

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
            token=token,
            smart=_smart(smart_client_id, smart_key, smart_token_url, smart_scope, smart_kid),
            cache_shared=embedding_cache_shared,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        result = run_score(opts)
    except ResumeMismatchError as exc:
        raise typer.BadParameter(str(exc), param_hint="--resume") from exc
    typer.echo(result.summary())
    if result.outcome != "succeeded":
        raise typer.Exit(1)


def _smart(
    client_id: str | None,
    key: Path | None,
    token_url: str | None,
    scope: str | None,
    kid: str | None,
) -> SmartOptions | None:
    """SMART options from the CLI; client id and key come together or not at all."""
    from training.score.job import SmartOptions

    if client_id is None and key is None:
        if token_url or scope or kid:
            raise typer.BadParameter("the --smart-* options need --smart-client-id and --smart-key")
        return None
    if client_id is None or key is None:
        raise typer.BadParameter(
            "SMART Backend Services needs both --smart-client-id and --smart-key"
        )
    return SmartOptions(client_id, key, token_url, scope, kid)


# One line per paragraph: the help renderer wraps to the terminal itself.
score.__doc__ = "\n\n".join(" ".join(par.split()) for par in _HELP.split("\n\n"))
