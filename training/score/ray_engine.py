"""The Ray engine: the same stages on Ray Data, from one laptop to a cluster.

::

    files ─ map_batches(read_shard) ─→ (patient id, raw resource) rows   [CPU tasks]
          ─ groupby(patient id).map_groups(featurise_group) ─→ features  [CPU tasks]
          ─ map_batches(ScoreActor, num_gpus=...) ─→ scored rows         [actor pool]
          ─ driver: render + commit parts and ledger (as the local engine)

Each NDJSON shard is read by one task (lines keep their file:line for the error file);
the group-by is Ray's shuffle; scoring runs in a pool of long-lived actors that load the
model once, one GPU each when the cluster has GPUs. Outputs are written by the driver
through the same ``RunStore``, so ``--resume``, the error file and the table behave as
with the local engine, and the results are the same record for record.

Pointing it at a cluster: start one (``ray start --head`` on one node, ``ray start
--address=<head>:6379`` on the others, or KubeRay), then run ``moe-health score
--engine ray --address <head>:6379 ...`` (or ``--address auto`` on a cluster node, or set
``RAY_ADDRESS``). Every node needs this package installed and the NDJSON folder, the
checkpoint and the embedding cache path visible at the same paths (a shared file system
or object-store mount). Without ``--address`` a local Ray is started on this machine.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from moe_core.feature_spec import FeatureSpec, NormStats
from training.score.local import StageTimes, score_rows
from training.score.pipeline import (
    BatchScorer,
    Failure,
    FeatureRow,
    RecordBuilder,
    ScoredRow,
    featurise_records,
    group_records,
)
from training.score.render import OutputRenderer
from training.score.run_store import Chunk, RunCounts, RunStore
from training.score.sources import canonical_group, line_source, open_ndjson, parse_line

__all__ = ["FeaturiseStage", "RayEngine", "ScoreActor", "featurise_group", "read_shard"]

_ERROR_KEY = ""  # group key of read failures (no patient)
_READ_BATCH = 20_000  # rows per block emitted while reading one shard
PID, RESOURCE, ERROR, FEATURES, FAILURES, SCORED, N_RES = (
    "patient_id",
    "resource",
    "error",
    "features",
    "failures",
    "scored",
    "n_resources",
)


_READ_SCHEMA = pa.schema([(PID, pa.string()), (RESOURCE, pa.binary()), (ERROR, pa.binary())])


def read_shard(batch: dict[str, np.ndarray[Any, Any]], skip: frozenset[str]) -> Iterator[pa.Table]:
    """One NDJSON file per input row -> (patient id, raw line, error) rows, in blocks."""
    for path_str in batch["path"]:
        path = Path(str(path_str))
        out: dict[str, list[Any]] = {PID: [], RESOURCE: [], ERROR: []}
        sent = False
        with open_ndjson(path) as fh:
            for line_no, line in enumerate(fh, start=1):
                parsed = parse_line(line, line_source(path, line_no))
                if parsed is None:
                    continue
                if isinstance(parsed, Failure):
                    out[PID].append(_ERROR_KEY)
                    out[RESOURCE].append(b"")
                    out[ERROR].append(orjson.dumps(parsed.to_dict()))
                elif parsed[0] not in skip:
                    out[PID].append(parsed[0])
                    out[RESOURCE].append(line.rstrip(b"\r\n"))
                    out[ERROR].append(b"")
                if len(out[PID]) >= _READ_BATCH:
                    yield pa.table(out, schema=_READ_SCHEMA)
                    out, sent = {PID: [], RESOURCE: [], ERROR: []}, True
        if out[PID] or not sent:  # an empty file still yields a block with the schema
            yield pa.table(out, schema=_READ_SCHEMA)


@dataclass(frozen=True, slots=True)
class FeaturiseStage:
    """Group -> records -> feature rows, in a CPU task (picklable: sent to workers)."""

    build: RecordBuilder
    spec: FeatureSpec
    stats: NormStats
    image_cached: Callable[[str], bool] | None = None

    def __call__(self, group: dict[str, np.ndarray[Any, Any]]) -> dict[str, list[Any]]:
        pids = group[PID]
        pid = str(pids[0]) if len(pids) else _ERROR_KEY
        if pid == _ERROR_KEY:  # the read failures of every shard
            return {
                PID: [_ERROR_KEY],
                N_RES: [0],
                FEATURES: [pickle.dumps([])],
                FAILURES: [b"[" + b",".join(bytes(e) for e in group[ERROR]) + b"]"],
            }
        resources = [orjson.loads(bytes(r)) for r in group[RESOURCE]]
        records, failures = group_records(canonical_group(pid, resources), self.build)
        rows, fails = featurise_records(records, self.spec, self.stats, self.image_cached)
        failures.extend(fails)
        return {
            PID: [pid],
            N_RES: [len(resources)],
            FEATURES: [pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)],
            FAILURES: [orjson.dumps([f.to_dict() for f in failures])],
        }


def featurise_group(
    group: dict[str, np.ndarray[Any, Any]], stage: FeaturiseStage
) -> dict[str, list[Any]]:
    """``map_groups`` entry point (Ray wants a named function)."""
    return stage(group)


class ScoreActor:
    """A Ray Data actor: feature rows of whole patients -> scored rows."""

    def __init__(self, factory: Callable[[], BatchScorer], batch_size: int) -> None:
        self.scorer = factory()
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray[Any, Any]]) -> dict[str, list[Any]]:
        rows: list[FeatureRow] = []
        for blob in batch[FEATURES]:
            rows.extend(pickle.loads(bytes(blob)))
        failures: list[Failure] = []
        scored = score_rows(rows, self.scorer, self.batch_size, failures)
        by_patient: dict[str, list[ScoredRow]] = {}
        for s in scored:
            by_patient.setdefault(s.patient_id, []).append(s)
        extra: dict[str, list[dict[str, Any]]] = {}
        for f in failures:
            extra.setdefault(f.patient_id or _ERROR_KEY, []).append(f.to_dict())
        out: dict[str, list[Any]] = {PID: [], N_RES: [], SCORED: [], FAILURES: []}
        for pid, n_res, fails in zip(batch[PID], batch[N_RES], batch[FAILURES], strict=True):
            key = str(pid)
            out[PID].append(key)
            out[N_RES].append(int(n_res))
            out[SCORED].append(pickle.dumps(by_patient.get(key, [])))
            out[FAILURES].append(orjson.dumps(orjson.loads(bytes(fails)) + extra.get(key, [])))
        return out


@dataclass(slots=True)
class RayEngine:
    """Runs the scoring stages on Ray Data (see the module docstring for clusters)."""

    build: RecordBuilder
    scorer_factory: Callable[[], BatchScorer]
    spec: FeatureSpec
    stats: NormStats
    render: OutputRenderer
    image_cached: Callable[[str], bool] | None = None
    batch_size: int = 64
    chunk_patients: int = 256
    actors: int = 1  # scoring actors; one GPU each when ``gpus_per_actor`` > 0
    gpus_per_actor: float = 0.0
    shuffle_partitions: int = 8  # hash partitions of the group-by (raise on a cluster)
    on_commit: Callable[[Chunk], None] | None = None  # e.g. write-back

    def run(
        self,
        files: Sequence[Path],
        store: RunStore,
        progress: Callable[[int], Any] | None = None,
        times: StageTimes | None = None,
    ) -> RunCounts:
        """Score every patient in ``files`` not yet in ``store``'s ledger."""
        import ray.data

        if not files:
            return store.counts
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        skip = frozenset(store.completed)
        ds: Any = ray.data.from_items([{"path": str(p)} for p in files])
        ds = ds.map_batches(read_shard, batch_size=1, fn_kwargs={"skip": skip})
        stage = FeaturiseStage(self.build, self.spec, self.stats, self.image_cached)
        ds = ds.groupby(PID, num_partitions=self.shuffle_partitions).map_groups(
            featurise_group, batch_format="numpy", fn_kwargs={"stage": stage}
        )
        ds = ds.map_batches(
            ScoreActor,
            fn_constructor_kwargs={
                "factory": self.scorer_factory,
                "batch_size": self.batch_size,
            },
            batch_size=max(1, self.batch_size // 2),
            concurrency=self.actors,
            num_gpus=self.gpus_per_actor,
            batch_format="numpy",
        )
        pending = Chunk()
        scored: list[ScoredRow] = []
        failures: list[Failure] = []
        for batch in ds.iter_batches(batch_size=self.chunk_patients, batch_format="numpy"):
            for pid, n_res, blob, fails in zip(
                batch[PID], batch[N_RES], batch[SCORED], batch[FAILURES], strict=True
            ):
                if str(pid) != _ERROR_KEY:
                    pending.patient_ids.append(str(pid))
                pending.counts.resources += int(n_res)
                scored.extend(pickle.loads(bytes(blob)))
                failures.extend(_failure(d) for d in orjson.loads(bytes(fails)))
            if len(pending.patient_ids) >= self.chunk_patients:
                self._commit(pending, scored, failures, store, progress)
                pending, scored, failures = Chunk(), [], []
        if not pending.empty or failures:
            self._commit(pending, scored, failures, store, progress)
        return store.counts

    def _commit(
        self,
        chunk: Chunk,
        scored: list[ScoredRow],
        failures: list[Failure],
        store: RunStore,
        progress: Callable[[int], Any] | None,
    ) -> None:
        self.render.fill(chunk, scored, failures)
        if self.on_commit is not None:
            self.on_commit(chunk)
        store.commit(chunk)
        if progress is not None:
            progress(len(chunk.patient_ids))


def _failure(d: dict[str, Any]) -> Failure:
    return Failure(
        reason=str(d["reason"]),
        patient_id=d.get("patient_id"),
        source=d.get("source"),
        detail=str(d.get("detail", "")),
    )
