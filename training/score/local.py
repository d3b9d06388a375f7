"""The local engine: the scoring stages in one process, streaming, in committed chunks.

Memory is bounded by the chunk size (patients held between commits), not by the
export: the source yields one patient's resources at a time, finished patients are
scored in batches and written out, and the ledger line for the chunk is the commit
point that ``--resume`` relies on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from moe_core.feature_spec import FeatureSpec, NormStats
from training.score.pipeline import (
    BatchScorer,
    Failure,
    FeatureRow,
    PatientGroup,
    RecordBuilder,
    ScoredRow,
    featurise_records,
    group_records,
)
from training.score.render import OutputRenderer
from training.score.run_store import Chunk, RunCounts, RunStore

__all__ = ["LocalEngine", "StageTimes", "score_chunk"]

# What a source yields: one patient's resources, or a line/resource it could not use.
SourceItem = PatientGroup | Failure


@dataclass(slots=True)
class StageTimes:
    """Seconds spent per stage (read + build + featurise vs model)."""

    read_featurise: float = 0.0
    model: float = 0.0
    write: float = 0.0


def score_chunk(
    groups: Sequence[PatientGroup],
    read_failures: Sequence[Failure],
    *,
    build: RecordBuilder,
    scorer: BatchScorer,
    spec: FeatureSpec,
    stats: NormStats,
    render: OutputRenderer,
    batch_size: int,
    times: StageTimes | None = None,
) -> Chunk:
    """Score a list of whole patients: every stage, in order; returns the chunk to commit."""
    times = times if times is not None else StageTimes()
    chunk = Chunk()
    failures = list(read_failures)
    rows: list[FeatureRow] = []
    t0 = time.perf_counter()
    for group in groups:
        records, fails = group_records(group, build)
        failures.extend(fails)
        feats, fails = featurise_records(records, spec, stats, scorer.image_cached)
        failures.extend(fails)
        rows.extend(feats)
        chunk.patient_ids.append(group.patient_id)
        chunk.counts.resources += len(group.resources)
    t1 = time.perf_counter()
    scored = score_rows(rows, scorer, batch_size, failures)
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
    """Runs a source through the stages and commits every ``chunk_patients`` patients."""

    build: RecordBuilder
    scorer: BatchScorer
    spec: FeatureSpec
    stats: NormStats
    render: OutputRenderer
    batch_size: int = 64
    chunk_patients: int = 256
    times: StageTimes = field(default_factory=StageTimes)
    on_commit: Callable[[Chunk], None] | None = None  # e.g. write-back, progress

    def run(
        self,
        source: Iterable[SourceItem],
        store: RunStore,
        progress: Callable[[int], Any] | None = None,
    ) -> RunCounts:
        """Score every patient of ``source`` not yet in ``store``'s ledger."""
        groups: list[PatientGroup] = []
        failures: list[Failure] = []
        read_t = time.perf_counter()
        for item in source:
            if isinstance(item, Failure):
                failures.append(item)
                continue
            if item.patient_id in store.completed:
                continue
            groups.append(item)
            if len(groups) >= self.chunk_patients:
                self.times.read_featurise += time.perf_counter() - read_t
                self._commit(groups, failures, store, progress)
                groups, failures = [], []
                read_t = time.perf_counter()
        self.times.read_featurise += time.perf_counter() - read_t
        if groups or failures:
            self._commit(groups, failures, store, progress)
        return store.counts

    def _commit(
        self,
        groups: list[PatientGroup],
        failures: list[Failure],
        store: RunStore,
        progress: Callable[[int], Any] | None,
    ) -> None:
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
        )
        t0 = time.perf_counter()
        if self.on_commit is not None:
            self.on_commit(chunk)
        store.commit(chunk)
        self.times.write += time.perf_counter() - t0
        if progress is not None:
            progress(len(groups))
