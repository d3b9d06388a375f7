"""The embedding cache: only unseen content is encoded; encoders never share vectors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from training.score.embedding_store import CacheProbe, EmbeddingStore, content_hash


def _encode(calls: list[list[object]]):  # type: ignore[no-untyped-def]
    def compute(items: list[object]) -> np.ndarray:
        calls.append(items)
        return np.array([[float(len(str(i))), 1.0] for i in items], dtype=np.float32)

    return compute


def test_second_run_encodes_only_changed_notes(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    texts = ["fever", "cough", "fever"]
    calls: list[list[object]] = []
    store = EmbeddingStore(path)
    first = store.embed("text:v1", [content_hash(t) for t in texts], texts, _encode(calls))
    assert first.shape == (3, 2)
    assert calls == [["fever", "cough"]]  # duplicates encoded once
    store.close()
    store = EmbeddingStore(path)  # a nightly rerun, one note changed
    texts2 = ["fever", "dyspnoea"]
    second = store.embed("text:v1", [content_hash(t) for t in texts2], texts2, _encode(calls))
    assert calls[-1] == ["dyspnoea"]
    np.testing.assert_array_equal(second[0], first[0])
    assert store.stats.hits == 1 and store.stats.misses == 1


def test_other_encoder_id_does_not_reuse_vectors(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path / "c.sqlite")
    calls: list[list[object]] = []
    store.embed("text:v1", [content_hash("a")], ["a"], _encode(calls))
    store.embed("text:v2", [content_hash("a")], ["a"], _encode(calls))
    assert len(calls) == 2


def test_cache_probe_survives_pickling(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    store = EmbeddingStore(path)
    store.put_many("image:v1", {"k": np.ones(3, dtype=np.float32)})
    probe = pickle.loads(pickle.dumps(CacheProbe(path, "image:v1")))
    assert probe("k") and not probe("other")
