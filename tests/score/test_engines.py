"""Local and Ray engines give the same outputs, record for record, on Synthea."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import ray  # a dependency of the scorer's Ray engine: missing, the suite must fail

from training.score import keys
from training.score.job import ScoreOptions, image_probe_is_safe, run_score
from training.score.run_store import iter_ndjson


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    """One local Ray for the whole module (start-up is slow)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _opts(export: Path, ckpt: Path, out: Path, engine: str) -> ScoreOptions:
    return ScoreOptions(
        source="ndjson",
        location=str(export),
        out=out,
        checkpoint=ckpt,
        engine=engine,  # type: ignore[arg-type]
        batch_size=7,  # batches and chunks cut differently in the two engines
        chunk_patients=9 if engine == "local" else 16,
        record_job=False,
        progress=False,
        device="cpu",
    )


def _by_id(path: Path) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in iter_ndjson(path)}


def _sorted_rows(path: Path) -> list[tuple[Any, ...]]:
    return sorted(tuple(r.values()) for r in pq.read_table(path).to_pylist())


def _sorted_errors(path: Path) -> list[tuple[Any, ...]]:
    return sorted(tuple(map(str, e.values())) for e in iter_ndjson(path))


@pytest.mark.slow
def test_local_and_ray_engines_give_identical_outputs(
    synthea_export: Path, tiny_ckpt: Path, tiny_scorer: Any, tmp_path: Path, ray_session: None
) -> None:
    local = tmp_path / "local"
    remote = tmp_path / "ray"
    run_score(_opts(synthea_export, tiny_ckpt, local, "local"), scorer=tiny_scorer)
    on_ray = run_score(_opts(synthea_export, tiny_ckpt, remote, "ray"), scorer=tiny_scorer)
    assert on_ray.times.read_featurise > 0 and on_ray.times.model > 0 and on_ray.times.write > 0
    ras = _by_id(local / keys.RISK_NDJSON_FILE)
    assert len(ras) == 63  # 21 admissions with data in their first 48 h x 3 tasks
    assert ras == _by_id(remote / keys.RISK_NDJSON_FILE)
    assert _sorted_rows(local / keys.TABLE_PARQUET_FILE) == _sorted_rows(
        remote / keys.TABLE_PARQUET_FILE
    )
    assert _sorted_errors(local / keys.ERRORS_FILE) == _sorted_errors(remote / keys.ERRORS_FILE)
    assert (local / keys.SUMMARY_FILE).read_bytes() == (remote / keys.SUMMARY_FILE).read_bytes()


def test_featurisers_get_a_cache_probe_only_when_they_share_the_cache() -> None:
    here = "10.0.0.1"
    assert image_probe_is_safe([here], here, client_mode=False, cache_shared=False)
    assert image_probe_is_safe([here, here], here, client_mode=False, cache_shared=False)
    # other nodes read their own file at that path: no probe, unless it is shared
    assert not image_probe_is_safe([here, "10.0.0.2"], here, client_mode=False, cache_shared=False)
    assert image_probe_is_safe([here, "10.0.0.2"], here, client_mode=False, cache_shared=True)
    # Ray Client: the driver is not on the cluster, whatever the addresses say
    assert not image_probe_is_safe([here], here, client_mode=True, cache_shared=False)
