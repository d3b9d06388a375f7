"""The local engine: the scoring stages in one process, streaming, in committed chunks.

Memory is bounded by the chunk size (patients held between commits), not by the
export: the source yields one patient's resources at a time, finished patients are
scored in batches and written out, and the ledger line for the chunk is the commit
point that ``--resume`` relies on.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from moe_core.feature_spec import FeatureSpec, NormStats
from training.score.pipeline import (
    BatchScorer,
    Failure,
    FeatureRow,
    PatientGroup,
    RawPatientGroup,
    RecordBuilder,
    ScoredRow,
    featurise_records,
    group_records,
)
from training.score.render import OutputRenderer
from training.score.run_store import Chunk, RunCounts, RunStore
from training.score.sources import gc_paused, parse_group

__all__ = ["Featurised", "LocalEngine", "StageTimes", "featurise_groups", "score_chunk"]

_WORKER_BATCH = 32  # patients per featurisation task sent to a worker process
# What a source yields: one patient's resources, or a line/resource it could not use.
SourceItem = PatientGroup | RawPatientGroup | Failure


@dataclass(slots=True)
class StageTimes:
    """Seconds spent per stage (read + build + featurise vs model)."""

    read_featurise: float = 0.0
    model: float = 0.0
    write: float = 0.0


@dataclass(slots=True)
class Featurised:
    """Feature rows of some whole patients, and what could not be used."""

    patient_ids: list[str] = field(default_factory=list)
    rows: list[FeatureRow] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    resources: int = 0

    def extend(self, other: Featurised) -> None:
        self.patient_ids.extend(other.patient_ids)
        self.rows.extend(other.rows)
        self.failures.extend(other.failures)
        self.resources += other.resources


def featurise_groups(
    groups: Sequence[PatientGroup | RawPatientGroup],
    build: RecordBuilder,
    spec: FeatureSpec | None,
    stats: NormStats,
    image_cached: Callable[[str], bool] | None = None,
) -> Featurised:
    """Records and feature rows of whole patients (runs in a worker process as well).

    ``spec=None`` means ``feature_catalog.DEFAULT_SPEC`` (specs hold mapping proxies,
    which do not pickle, so workers look the default up instead of receiving it).
    Raw groups are parsed here (``sources.parse_group``): in the worker, when it is one.
    """
    if spec is None:
        from moe_core.feature_catalog import DEFAULT_SPEC

        spec = DEFAULT_SPEC
    out = Featurised()
    # A patient's parsed resources and records are acyclic and freed by reference
    # counting when _featurise_group returns, before the cyclic GC is back: it never
    # walks them (it did, a few times each, which cost as much as the parsing).
    with gc_paused():
        for item in groups:
            _featurise_group(item, build, spec, stats, image_cached, out)
    return out


def _featurise_group(
    item: PatientGroup | RawPatientGroup,
    build: RecordBuilder,
    spec: FeatureSpec,
    stats: NormStats,
    image_cached: Callable[[str], bool] | None,
    out: Featurised,
) -> None:
    """Records and feature rows of one patient, added to ``out``."""
    group = parse_group(item)
    records, fails = group_records(group, build)
    out.failures.extend(fails)
    feats, fails = featurise_records(records, spec, stats, image_cached)
    out.failures.extend(fails)
    out.rows.extend(feats)
    out.patient_ids.append(group.patient_id)
    out.resources += len(group.resources)


def score_chunk(
    groups: Sequence[PatientGroup | RawPatientGroup],
    read_failures: Sequence[Failure],
    *,
    build: RecordBuilder,
    scorer: BatchScorer,
    spec: FeatureSpec,
    stats: NormStats,
    render: OutputRenderer,
    batch_size: int,
    times: StageTimes | None = None,
    featurised: Featurised | None = None,
) -> Chunk:
    """Score a list of whole patients: every stage, in order; returns the chunk to commit.

    ``featurised``: the groups' feature rows when they were computed elsewhere (workers).
    """
    times = times if times is not None else StageTimes()
    t0 = time.perf_counter()
    if featurised is None:
        featurised = featurise_groups(groups, build, spec, stats, scorer.image_cached)
    chunk = Chunk(patient_ids=list(featurised.patient_ids))
    chunk.counts.resources = featurised.resources
    failures = [*read_failures, *featurised.failures]
    t1 = time.perf_counter()
    scored = score_rows(featurised.rows, scorer, batch_size, failures)
    t2 = time.perf_counter()
    times.read_featurise += t1 - t0
    times.model += t2 - t1
    render.fill(chunk, scored, failures)
    return chunk


def score_rows(
    rows: Sequence[FeatureRow],
    scorer: BatchScorer,
    batch_size: int,
    failures: list[Failure],
) -> list[ScoredRow]:
    """Score ``rows`` in batches; a batch the model rejects is retried row by row."""
    scored: list[ScoredRow] = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        try:
            scored.extend(scorer.score(batch))
        except Exception:
            for row in batch:  # isolate the row that fails, keep the rest
                try:
                    scored.extend(scorer.score([row]))
                except Exception as exc:
                    failures.append(_scoring_failure(row, exc))
    return scored


def _scoring_failure(row: FeatureRow, exc: BaseException) -> Failure:
    from training.score import keys

    return Failure(
        keys.REASON_SCORING_FAILED,
        row.patient_id,
        f"Encounter/{row.encounter_id}",
        f"{type(exc).__name__}: {exc}"[:500],
    )


@dataclass(slots=True)
class LocalEngine:
    """Runs a source through the stages and commits every ``chunk_patients`` patients.

    ``workers`` > 1 featurises in that many worker processes (records + features of
    ``_WORKER_BATCH`` patients per task) while this process reads, scores and writes;
    the results are the same as with one process. Workers need the default feature
    spec (the one every shipped checkpoint uses); with another spec it runs in-process.
    """

    build: RecordBuilder
    scorer: BatchScorer
    spec: FeatureSpec
    stats: NormStats
    render: OutputRenderer
    batch_size: int = 64
    chunk_patients: int = 256
    times: StageTimes = field(default_factory=StageTimes)
    on_commit: Callable[[Chunk], None] | None = None  # e.g. write-back, progress
    workers: int = 1

    def run(
        self,
        source: Iterable[SourceItem],
        store: RunStore,
        progress: Callable[[int], Any] | None = None,
    ) -> RunCounts:
        """Score every patient of ``source`` not yet in ``store``'s ledger."""
        pool = _pool(self.workers if self._default_spec() else 1)
        probe = getattr(self.scorer, "probe", None)
        image_cached = probe() if callable(probe) else None
        try:
            groups: list[PatientGroup | RawPatientGroup] = []
            batch: list[PatientGroup | RawPatientGroup] = []
            pending: list[Future[Featurised]] = []
            failures: list[Failure] = []
            read_t = time.perf_counter()
            for item in source:
                if isinstance(item, Failure):
                    failures.append(item)
                    continue
                if item.patient_id in store.completed:
                    continue
                groups.append(item)
                if pool is not None:
                    batch.append(item)
                    if len(batch) >= _WORKER_BATCH:
                        pending.append(self._submit(pool, batch, image_cached))
                        batch = []
                if len(groups) >= self.chunk_patients:
                    if batch:
                        pending.append(self._submit(pool, batch, image_cached))
                        batch = []
                    self.times.read_featurise += time.perf_counter() - read_t
                    self._commit(groups, failures, store, progress, pending)
                    groups, failures, pending = [], [], []
                    read_t = time.perf_counter()
            if batch:
                pending.append(self._submit(pool, batch, image_cached))
            self.times.read_featurise += time.perf_counter() - read_t
            if groups or failures:
                self._commit(groups, failures, store, progress, pending)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        return store.counts

    def _submit(
        self, pool: Any, batch: list[PatientGroup | RawPatientGroup], image_cached: Any
    ) -> Future[Featurised]:
        future: Future[Featurised] = pool.submit(
            featurise_groups, batch, self.build, None, self.stats, image_cached
        )
        return future

    def _default_spec(self) -> bool:
        from moe_core.feature_catalog import DEFAULT_SPEC

        return self.spec is DEFAULT_SPEC

    def _commit(
        self,
        groups: list[PatientGroup | RawPatientGroup],
        failures: list[Failure],
        store: RunStore,
        progress: Callable[[int], Any] | None,
        pending: list[Future[Featurised]],
    ) -> None:
        featurised: Featurised | None = None
        if pending:
            t0 = time.perf_counter()
            featurised = Featurised()
            for future in pending:  # submission order: the same order as one process
                featurised.extend(future.result())
            self.times.read_featurise += time.perf_counter() - t0
        chunk = score_chunk(
            groups,
            failures,
            build=self.build,
            scorer=self.scorer,
            spec=self.spec,
            stats=self.stats,
            render=self.render,
            batch_size=self.batch_size,
            times=self.times,
            featurised=featurised,
        )
        t0 = time.perf_counter()
        if self.on_commit is not None:
            self.on_commit(chunk)
        store.commit(chunk)
        self.times.write += time.perf_counter() - t0
        if progress is not None:
            progress(len(groups))


def _pool(workers: int) -> Any:
    if workers <= 1:
        return None
    # spawn, not fork: the parent holds torch threads and an open model
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
