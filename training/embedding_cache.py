"""Cached text and image embeddings for frozen encoders, stored beside the cohort.

With frozen encoders the pooled encoder outputs (``TextEncoder.embed``,
``ImageEncoder.embed``) never change, so they are computed once and reused by every
epoch and every run. The cache lives in ``<cohort>/embeddings/<modality>-<identity>/``
where ``identity`` hashes the encoder: its kind, settings (pooling, max tokens) and the
SHA-256 of its weights. A changed encoder (other folder, other weights, other seed for
a randomly initialised DenseNet) therefore gets a fresh cache instead of stale vectors.
Entries are keyed by content (``text_content_key`` / ``image_content_key`` of
``moe_core.features``), so edited notes or images are recomputed and unchanged ones are
not.

Files: ``keys.json`` (content keys, in row order), ``emb.npy`` (N, D) float32 and
``meta.json`` (identity, width, encoder description). Writes go to temporary files
renamed into place, so a crash never leaves a half-written cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from tqdm import tqdm

from moe_core.features import image_content_key, image_tensor, note_text, text_content_key
from moe_core.modalities import Modality
from moe_core.records import ImageRef, PatientRecord

__all__ = [
    "CACHE_DIR",
    "EmbeddingCache",
    "add_image_item",
    "add_text_item",
    "encoder_identity",
    "fill_image_cache",
    "fill_text_cache",
    "folder_identity",
    "state_dict_hash",
    "text_items",
]

CACHE_DIR = "embeddings"
_KEYS, _EMB, _META = "keys.json", "emb.npy", "meta.json"


def state_dict_hash(module: nn.Module) -> str:
    """SHA-256 over a module's parameters and buffers (names, shapes, dtypes, bytes)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def encoder_identity(kind: str, module: nn.Module, **settings: object) -> str:
    """A short identity of an encoder: kind + settings + weights hash."""
    h = hashlib.sha256(kind.encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(state_dict_hash(module).encode())
    return h.hexdigest()[:20]


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json", ".txt", ".model")


def folder_identity(kind: str, folder: Path, **settings: object) -> str:
    """Identity of an encoder stored in ``folder``: kind + settings + hash of its files.

    Hashes the weight, config and vocabulary files, so the encoder need not be loaded
    to find its cache.
    """
    h = hashlib.sha256(kind.encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in sorted(p for p in Path(folder).rglob("*") if p.suffix in _WEIGHT_SUFFIXES):
        h.update(str(path.relative_to(folder)).encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:20]


class EmbeddingCache(Mapping[str, npt.NDArray[np.float32]]):
    """Content key -> embedding for one encoder identity; usable as a featuriser lookup."""

    def __init__(self, cohort: Path, modality: Modality, identity: str, **describe: object):
        self.folder = Path(cohort) / CACHE_DIR / f"{modality.name.lower()}-{identity}"
        self.identity = identity
        self.describe = describe
        self._index: dict[str, int] = {}
        self._emb: npt.NDArray[np.float32] = np.zeros((0, 0), dtype=np.float32)
        self._load()

    def _load(self) -> None:
        keys_file, emb_file = self.folder / _KEYS, self.folder / _EMB
        if not (keys_file.is_file() and emb_file.is_file()):
            return
        keys = json.loads(keys_file.read_text())
        emb = np.load(emb_file)
        if len(keys) != emb.shape[0]:
            return  # inconsistent files (should not happen): rebuild from scratch
        self._index = {k: i for i, k in enumerate(keys)}
        self._emb = emb.astype(np.float32, copy=False)

    def __getitem__(self, key: str) -> npt.NDArray[np.float32]:
        row: npt.NDArray[np.float32] = self._emb[self._index[key]]
        return row

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    @property
    def dim(self) -> int:
        return int(self._emb.shape[1]) if self._emb.size else 0

    def add(self, keys: Sequence[str], emb: npt.NDArray[np.float32]) -> None:
        """Append new rows (keys already present are ignored) and save atomically."""
        fresh = [(k, i) for i, k in enumerate(keys) if k not in self._index]
        if not fresh:
            return
        rows = emb[[i for _, i in fresh]].astype(np.float32)
        base = len(self._index)
        self._emb = rows if base == 0 else np.concatenate([self._emb, rows], axis=0)
        for j, (k, _) in enumerate(fresh):
            self._index[k] = base + j
        self._save()

    def _save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        keys = sorted(self._index, key=self._index.__getitem__)
        tmp_emb = self.folder / f".{_EMB}.{os.getpid()}.tmp"
        with tmp_emb.open("wb") as fh:
            np.save(fh, self._emb)
        tmp_keys = self.folder / f".{_KEYS}.{os.getpid()}.tmp"
        tmp_keys.write_text(json.dumps(keys))
        os.replace(tmp_emb, self.folder / _EMB)
        os.replace(tmp_keys, self.folder / _KEYS)
        meta = {"identity": self.identity, "dim": self.dim, "rows": len(keys), **self.describe}
        (self.folder / _META).write_text(json.dumps(meta, indent=2, default=str))


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def text_items(records: Iterable[PatientRecord]) -> dict[str, str]:
    """Content key -> assembled note text of every record with notes."""
    out: dict[str, str] = {}
    for rec in records:
        add_text_item(out, rec)
    return out


def add_text_item(items: dict[str, str], rec: PatientRecord) -> None:
    """Add ``rec``'s assembled note text (if any) to ``items``."""
    if not rec.present[Modality.TEXT]:
        return
    text = note_text(rec)
    if text:
        items.setdefault(text_content_key(text), text)


def add_image_item(
    items: dict[str, tuple[str, ImageRef]], failed: list[str], rec: PatientRecord
) -> None:
    """Add ``rec``'s frontal image (if any) to ``items``; unreadable ones go to ``failed``."""
    ref = rec.frontal_image()
    if ref is None:
        return
    try:
        key = image_content_key(ref)
    except (ValueError, OSError):
        failed.append(rec.encounter_id)
        return
    items.setdefault(key, (rec.encounter_id, ref))


@torch.no_grad()
def fill_text_cache(
    cache: EmbeddingCache,
    items: Mapping[str, str],
    embed: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    tokenizer: Any,
    *,
    max_tokens: int,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> int:
    """Embed every note text (content key -> text) not yet cached; returns how many."""
    todo = [(k, t) for k, t in items.items() if k not in cache]
    bar = tqdm(total=len(todo), disable=not progress, desc="text embeddings", unit="note")
    for chunk in _chunks(todo, batch_size):
        enc = tokenizer(
            [t for _, t in chunk],
            padding="longest",
            truncation=True,
            max_length=max_tokens,
            return_tensors="pt",
        )
        emb = embed(enc["input_ids"].to(device), enc["attention_mask"].to(device))  # (B, D)
        cache.add([k for k, _ in chunk], emb.float().cpu().numpy())
        bar.update(len(chunk))
    bar.close()
    return len(todo)


@torch.no_grad()
def fill_image_cache(
    cache: EmbeddingCache,
    items: Mapping[str, tuple[str, ImageRef]],
    embed: Callable[[torch.Tensor], torch.Tensor],
    *,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> tuple[int, list[str]]:
    """Embed every image (content key -> (encounter id, ref)) not yet cached.

    Returns (how many were computed, encounter ids whose image could not be decoded;
    the featuriser marks those images absent and records why).
    """
    todo = [(k, v) for k, v in items.items() if k not in cache]
    failed: list[str] = []
    bar = tqdm(total=len(todo), disable=not progress, desc="image embeddings", unit="img")
    for chunk in _chunks(todo, batch_size):
        keys, tensors = [], []
        for key, (enc_id, ref) in chunk:
            try:
                tensors.append(image_tensor(ref.load()))
                keys.append(key)
            except (ValueError, OSError):
                failed.append(enc_id)
        if tensors:
            emb = embed(torch.stack(tensors).to(device))  # (B, 1024)
            cache.add(keys, emb.float().cpu().numpy())
        bar.update(len(chunk))
    bar.close()
    return len(todo), failed
