"""Patient-level train/validation/test splits: seeded, reproducible, saved to a file.

Every admission of one patient lands in the same split, so no patient is seen in
training and evaluated in test. The assignment depends only on the set of patient
ids, the seed and the fractions (ids are sorted before the seeded shuffle), so the
same inputs always give the same file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_FRACTIONS",
    "SPLIT_NAMES",
    "TEST",
    "TRAIN",
    "VAL",
    "assign_splits",
    "hash_split",
    "read_splits",
    "split_config",
    "write_splits",
]

TRAIN, VAL, TEST = "train", "val", "test"
SPLIT_NAMES = (TRAIN, VAL, TEST)
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)  # the paper's 80:10:10 (section 4.3)


def _check_fractions(fractions: tuple[float, float, float]) -> None:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(
            f"split fractions must be three non-negative numbers summing to 1, got {fractions}"
        )


def assign_splits(
    patient_ids: Iterable[str],
    *,
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> dict[str, str]:
    """Patient id -> ``"train"`` / ``"val"`` / ``"test"``, seeded and order-independent.

    Sizes are ``round(n * fraction)`` for val and test; train takes the rest, so
    every patient is assigned exactly once.
    """
    _check_fractions(fractions)
    ids = sorted(set(patient_ids))
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = round(len(ids) * fractions[1])
    n_test = round(len(ids) * fractions[2])
    n_train = len(ids) - n_val - n_test
    out: dict[str, str] = {}
    for rank, idx in enumerate(order):
        out[ids[int(idx)]] = TRAIN if rank < n_train else (VAL if rank < n_train + n_val else TEST)
    return out


def split_config(
    seed: int, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
) -> dict[str, Any]:
    """The parameters recorded beside the assignment (``splits.json``)."""
    return {"seed": seed, "fractions": dict(zip(SPLIT_NAMES, fractions, strict=True))}


def write_splits(
    path: Path | str,
    assignment: Mapping[str, str],
    *,
    seed: int,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> None:
    """Save the assignment with its seed and fractions as JSON."""
    doc = split_config(seed, fractions) | {"patients": dict(sorted(assignment.items()))}
    Path(path).write_text(json.dumps(doc, indent=1))


def read_splits(path: Path | str) -> dict[str, str]:
    """Patient id -> split, from a file written by ``write_splits`` or a cohort folder."""
    p = Path(path)
    if p.is_dir():
        p = p / "splits.json"
    doc = json.loads(p.read_text())
    patients = doc.get("patients")
    if not isinstance(patients, dict):
        raise ValueError(f"{p} has no 'patients' mapping")
    bad = {v for v in patients.values() if v not in SPLIT_NAMES}
    if bad:
        raise ValueError(f"{p} holds unknown split names: {sorted(bad)}")
    return {str(k): str(v) for k, v in patients.items()}


def hash_split(
    patient_id: str, *, seed: int = 0, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
) -> str:
    """Split of one patient from a seeded hash of its id, for streams of unknown size.

    The same id and seed always give the same split; over many patients the shares
    approach ``fractions`` (exact sizes need ``assign_splits`` and all ids up front).
    """
    _check_fractions(fractions)
    digest = hashlib.sha256(f"{seed}:{patient_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    if u < fractions[0]:
        return TRAIN
    return VAL if u < fractions[0] + fractions[1] else TEST
