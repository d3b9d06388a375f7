"""Fixtures for batch scoring: Synthea bundles as a Bulk NDJSON export."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest


def bundles_to_ndjson(bundles: list[Path], out: Path) -> Path:
    """Transaction bundles -> one ``<Type>.ndjson`` per resource type (a Bulk export)."""
    out.mkdir(parents=True, exist_ok=True)
    by_type: dict[str, list[bytes]] = defaultdict(list)
    for path in bundles:
        for entry in orjson.loads(path.read_bytes()).get("entry", []):
            res = entry["resource"]
            by_type[res["resourceType"]].append(orjson.dumps(res))
    for rtype, lines in by_type.items():
        (out / f"{rtype}.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    return out


@pytest.fixture(scope="session")
def synthea_bundles(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "synthea-r4").glob("*.json"))


@pytest.fixture(scope="session")
def synthea_export(synthea_bundles: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 40 Synthea R4 bundles as NDJSON, once per session."""
    return bundles_to_ndjson(synthea_bundles, tmp_path_factory.mktemp("synthea-ndjson"))


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real checkpoint (saved once per session)."""
    from tests.score.tiny_model import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="session")
def tiny_scorer(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny checkpoint loaded once, with an embedding cache of its own."""
    from training.score.scorer import ScorerFactory

    cache = tmp_path_factory.mktemp("cache") / "embeddings.sqlite"
    return ScorerFactory(tiny_ckpt, cache, device="cpu")()
