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

Pointing it at a cluster: ``--address`` is passed to ``ray.init``. Start a cluster
(``ray start --head`` on one node, ``ray start --address=<head>:6379`` on the others, or
KubeRay) and run ``moe-health score --engine ray --address auto ...`` on one of its
nodes (``--address <head>:6379``, the head's GCS address, works too). From outside the
cluster, Ray Client (``--address ray://<head>:10001``) connects a remote driver; for
long jobs Ray recommends submitting the command instead (``ray job submit --address
http://<head>:8265 -- moe-health score ...``). Without ``--address``, Ray joins the
cluster named by ``RAY_ADDRESS`` or one already running on this machine, else starts a
local one. Every node needs this package installed and the NDJSON folder and the
checkpoint at the same paths (a shared file system or object-store mount). The
embedding cache is per node unless ``--embedding-cache-shared`` says its path is shared:
featurisers only skip decoding cached images when they read the same cache file as the
scoring actors (``training.score.job.image_probe_is_safe``).
"""

from __future__ import annotations

import pickle
import time
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
from training.score.sources import canonical_group, read_lines

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
# Seconds a task spent on a row (featurising its group / its share of a model batch):
# summed by the driver into StageTimes, i.e. worker-seconds, not wall time.
FEAT_S, MODEL_S = "featurise_s", "model_s"


_READ_SCHEMA = pa.schema([(PID, pa.string()), (RESOURCE, pa.binary()), (ERROR, pa.binary())])


def read_shard(batch: dict[str, np.ndarray[Any, Any]], skip: frozenset[str]) -> Iterator[pa.Table]:
    """One NDJSON file per input row -> (patient id, raw line, error) rows, in blocks."""
    for path_str in batch["path"]:
        path = Path(str(path_str))
        out: dict[str, list[Any]] = {PID: [], RESOURCE: [], ERROR: []}
        sent = False
        for line, parsed in read_lines(path):  # a corrupt gzip ends with a Failure
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
        t0 = time.perf_counter()
        pids = group[PID]
        pid = str(pids[0]) if len(pids) else _ERROR_KEY
        if pid == _ERROR_KEY:  # the read failures of every shard
            return {
                PID: [_ERROR_KEY],
                N_RES: [0],
                FEATURES: [pickle.dumps([])],
                FAILURES: [b"[" + b",".join(bytes(e) for e in group[ERROR]) + b"]"],
                FEAT_S: [time.perf_counter() - t0],
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
            FEAT_S: [time.perf_counter() - t0],
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
        t0 = time.perf_counter()
        scored = score_rows(rows, self.scorer, self.batch_size, failures)
        model_s = (time.perf_counter() - t0) / max(1, len(batch[PID]))  # shared by the rows
        by_patient: dict[str, list[ScoredRow]] = {}
        for s in scored:
            by_patient.setdefault(s.patient_id, []).append(s)
        extra: dict[str, list[dict[str, Any]]] = {}
        for f in failures:
            extra.setdefault(f.patient_id or _ERROR_KEY, []).append(f.to_dict())
        out: dict[str, list[Any]] = {
            PID: [], N_RES: [], SCORED: [], FAILURES: [], FEAT_S: [], MODEL_S: []
        }  # fmt: skip
        for pid, n_res, fails, feat_s in zip(
            batch[PID], batch[N_RES], batch[FAILURES], batch[FEAT_S], strict=True
        ):
            key = str(pid)
            out[PID].append(key)
            out[N_RES].append(int(n_res))
            out[SCORED].append(pickle.dumps(by_patient.get(key, [])))
            out[FAILURES].append(orjson.dumps(orjson.loads(bytes(fails)) + extra.get(key, [])))
            out[FEAT_S].append(float(feat_s))
            out[MODEL_S].append(model_s)
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
        """Score every patient in ``files`` not yet in ``store``'s ledger.

        ``times``: featurise and model seconds summed over Ray tasks (worker-seconds:
        reading happens in the same tasks and is not split out); write is the driver's
        render + write-back + commit time.
        """
        import ray.data

        times = times if times is not None else StageTimes()
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
            times.read_featurise += float(np.sum(batch[FEAT_S]))
            times.model += float(np.sum(batch[MODEL_S]))
            if len(pending.patient_ids) >= self.chunk_patients:
                self._commit(pending, scored, failures, store, progress, times)
                pending, scored, failures = Chunk(), [], []
        if not pending.empty or failures:
            self._commit(pending, scored, failures, store, progress, times)
        return store.counts

    def _commit(
        self,
        chunk: Chunk,
        scored: list[ScoredRow],
        failures: list[Failure],
        store: RunStore,
        progress: Callable[[int], Any] | None,
        times: StageTimes,
    ) -> None:
        t0 = time.perf_counter()
        self.render.fill(chunk, scored, failures)
        if self.on_commit is not None:
            self.on_commit(chunk)
        store.commit(chunk)
        times.write += time.perf_counter() - t0
        if progress is not None:
            progress(len(chunk.patient_ids))


def _failure(d: dict[str, Any]) -> Failure:
    return Failure(
        reason=str(d["reason"]),
        patient_id=d.get("patient_id"),
        source=d.get("source"),
        detail=str(d.get("detail", "")),
    )
