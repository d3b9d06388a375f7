"""An on-disk embedding cache keyed by encoder id + content hash (SQLite).

A nightly rerun over an export that changed a little only encodes the notes and images
it has not seen: every embedding is stored under ``(encoder_id, sha256(content))``.
The encoder id names the weights (e.g. ``"text:<checkpoint sha>"``), so a new model
never reuses an old model's vectors.

SQLite in WAL mode lets several worker processes on one machine share a cache file.
On a Ray cluster, point ``--embedding-cache`` at a path on each node (every node then
keeps its own cache) or at a shared file system, and then say so with
``--embedding-cache-shared`` (only then may featurisers trust the driver's cache).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["CacheProbe", "CacheStats", "EmbeddingStore", "content_hash"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embedding (
    encoder_id TEXT NOT NULL,
    content_key TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (encoder_id, content_key)
) WITHOUT ROWID
"""
_SQLITE_MAX_VARS = 900  # stay below SQLite's default bound on host parameters


def content_hash(payload: str | bytes) -> str:
    """Hex sha256 of the content (text as UTF-8)."""
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    return hashlib.sha256(data).hexdigest()


@dataclass(slots=True)
class CacheStats:
    """How many embeddings came from the cache and how many were computed."""

    hits: int = 0
    misses: int = 0


class EmbeddingStore:
    """Float32 vectors by ``(encoder_id, content_key)`` in one SQLite file.

    ``path=None`` keeps the cache in memory (one process, lost at exit).
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            ":memory:" if path is None else str(path), timeout=60.0, check_same_thread=False
        )
        self._lock = threading.Lock()
        with self._lock:
            if path is not None:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)
            self._conn.commit()
        self.stats = CacheStats()

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()

    def get_many(self, encoder_id: str, keys: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        """The cached vectors among ``keys`` (missing keys are absent from the result)."""
        found: dict[str, npt.NDArray[np.float32]] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), _SQLITE_MAX_VARS):
                chunk = unique[start : start + _SQLITE_MAX_VARS]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    "SELECT content_key, dim, vector FROM embedding "
                    f"WHERE encoder_id = ? AND content_key IN ({marks})",
                    (encoder_id, *chunk),
                ).fetchall()
                for key, dim, blob in rows:
                    vec = np.frombuffer(blob, dtype=np.float32)
                    if vec.shape[0] == dim:
                        found[key] = vec
        return found

    def put_many(self, encoder_id: str, items: dict[str, npt.NDArray[np.float32]]) -> None:
        """Store vectors (1-D float32); an existing key is replaced."""
        rows = []
        for key, vec in items.items():
            v = np.ascontiguousarray(vec, dtype=np.float32).reshape(-1)
            rows.append((encoder_id, key, int(v.shape[0]), v.tobytes()))
        with self._lock:
            self._conn.executemany(
                "INSERT OR REPLACE INTO embedding (encoder_id, content_key, dim, vector) "
                "VALUES (?, ?, ?, ?)",
                rows,
            )
            self._conn.commit()

    def embed(
        self,
        encoder_id: str,
        keys: Sequence[str],
        payloads: Sequence[object],
        compute: Callable[[list[object]], npt.NDArray[np.float32]],
    ) -> npt.NDArray[np.float32]:
        """Vectors for every payload, computing (in one batched call) only the unseen ones.

        ``keys[i]`` is the content hash of ``payloads[i]``; ``compute`` maps a list of
        payloads to an (N, D) float32 array. Returns (len(keys), D).
        """
        if len(keys) != len(payloads):
            raise ValueError(f"{len(keys)} keys for {len(payloads)} payloads")
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        cached = self.get_many(encoder_id, keys)
        todo: dict[str, object] = {}
        for key, payload in zip(keys, payloads, strict=True):
            if key not in cached and key not in todo:
                todo[key] = payload
        self.stats.hits += sum(1 for k in keys if k in cached)
        self.stats.misses += len(keys) - sum(1 for k in keys if k in cached)
        if todo:
            computed = np.asarray(compute(list(todo.values())), dtype=np.float32)  # (N, D)
            if computed.ndim != 2 or computed.shape[0] != len(todo):
                raise ValueError(f"encoder returned shape {computed.shape} for {len(todo)} inputs")
            fresh = {k: computed[i] for i, k in enumerate(todo)}
            self.put_many(encoder_id, fresh)
            cached.update(fresh)
        return np.stack([cached[k] for k in keys]).astype(np.float32, copy=False)  # (N, D)


class CacheProbe:
    """Picklable ``key -> bool``: is an embedding of ``encoder_id`` cached under ``path``?

    Workers in other processes open the SQLite file lazily, read-only in effect.
    """

    def __init__(self, path: Path | None, encoder_id: str) -> None:
        self.path = path
        self.encoder_id = encoder_id
        self._store: EmbeddingStore | None = None

    def __getstate__(self) -> dict[str, object]:
        return {"path": self.path, "encoder_id": self.encoder_id}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.path = state["path"]  # type: ignore[assignment]
        self.encoder_id = str(state["encoder_id"])
        self._store = None

    def __call__(self, key: str) -> bool:
        if self.path is None or not self.path.exists():
            return False
        if self._store is None:
            self._store = EmbeddingStore(self.path)
        return bool(self._store.get_many(self.encoder_id, [key]))
