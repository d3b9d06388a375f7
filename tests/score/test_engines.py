"""Local and Ray engines give the same outputs, record for record, on Synthea."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from training.score import keys
from training.score.builders import FhirRecordBuilder
from training.score.local import LocalEngine
from training.score.render import OutputRenderer
from training.score.run_store import RunStore, iter_ndjson
from training.score.scorer import ScorerFactory
from training.score.sources import ndjson_files, spill_groups

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    """One local Ray for the whole module (start-up is slow)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _score_local(export: Path, ckpt: Path, out: Path, cache: Path) -> None:
    scorer = ScorerFactory(ckpt, cache, device="cpu")()
    store = RunStore(out, resume=False)
    engine = LocalEngine(
        FhirRecordBuilder(), scorer, scorer.spec, scorer.stats, OutputRenderer(scorer.info),
        batch_size=7, chunk_patients=9,
    )  # fmt: skip
    engine.run(spill_groups(ndjson_files(export), skip=store.completed), store)
    store.finalize()


def _score_ray(export: Path, ckpt: Path, out: Path, cache: Path) -> None:
    from training.score.ray_engine import RayEngine

    factory = ScorerFactory(ckpt, cache, device="cpu")
    scorer = factory()
    store = RunStore(out, resume=False)
    engine = RayEngine(
        build=FhirRecordBuilder(),
        scorer_factory=factory,
        spec=scorer.spec,
        stats=scorer.stats,
        render=OutputRenderer(scorer.info),
        image_cached=scorer.probe(),
        batch_size=16,
        chunk_patients=16,
    )
    engine.run(ndjson_files(export), store)
    store.finalize()


def _by_id(path: Path) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in iter_ndjson(path)}


def _table(path: Path) -> list[tuple[Any, ...]]:
    rows = pq.read_table(path).to_pylist()
    return sorted(tuple(r.values()) for r in rows)


@pytest.mark.slow
def test_local_and_ray_engines_give_identical_outputs(
    synthea_export: Path, tiny_ckpt: Path, tmp_path: Path, ray_session: None
) -> None:
    _score_local(synthea_export, tiny_ckpt, tmp_path / "local", tmp_path / "local.sqlite")
    _score_ray(synthea_export, tiny_ckpt, tmp_path / "ray", tmp_path / "ray.sqlite")
    local = _by_id(tmp_path / "local" / keys.RISK_NDJSON_FILE)
    remote = _by_id(tmp_path / "ray" / keys.RISK_NDJSON_FILE)
    assert len(local) == 63  # 21 scorable admissions x 3 tasks
    assert local == remote
    assert _table(tmp_path / "local" / keys.TABLE_PARQUET_FILE) == _table(
        tmp_path / "ray" / keys.TABLE_PARQUET_FILE
    )
    local_sum = (tmp_path / "local" / keys.SUMMARY_FILE).read_bytes()
    assert local_sum == (tmp_path / "ray" / keys.SUMMARY_FILE).read_bytes()
