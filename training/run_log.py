"""Per-epoch metrics (CSV + JSONL, optional TensorBoard) and the resumable epoch state."""

from __future__ import annotations

import csv
import math
import os
import warnings
from pathlib import Path
from typing import Any

import orjson
import torch

__all__ = ["LAST_STATE", "METRICS_CSV", "METRICS_JSONL", "RunLog", "load_state", "save_state"]

METRICS_CSV = "metrics.csv"
METRICS_JSONL = "metrics.jsonl"
LAST_STATE = "last.pt"


def save_state(out: Path, state: dict[str, Any]) -> None:
    """Write the epoch state atomically (a crash mid-write keeps the previous one)."""
    tmp = out / f".{LAST_STATE}.{os.getpid()}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, out / LAST_STATE)


def load_state(out: Path) -> dict[str, Any] | None:
    """The last epoch state in ``out``, or ``None`` when there is none."""
    path = out / LAST_STATE
    if not path.is_file():
        return None
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return state


def _keep_epochs(out: Path, done: int | None) -> None:
    """Start the metrics logs afresh (``done`` None) or drop rows after epoch ``done``.

    A resumed run continues from its last saved epoch; rows a crashed run logged after
    that state was saved would otherwise appear twice.
    """
    jsonl, csv_path = out / METRICS_JSONL, out / METRICS_CSV
    if done is None:
        jsonl.unlink(missing_ok=True)
        csv_path.unlink(missing_ok=True)
        return
    if jsonl.is_file():
        rows = [orjson.loads(line) for line in jsonl.read_bytes().splitlines() if line.strip()]
        kept = b"".join(orjson.dumps(r) + b"\n" for r in rows if int(r["epoch"]) <= done)
        jsonl.write_bytes(kept)
    if csv_path.is_file():
        with csv_path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            fields, rows_csv = reader.fieldnames, list(reader)
        with csv_path.open("w", newline="") as fh:
            if fields:
                writer = csv.DictWriter(fh, fieldnames=list(fields))
                writer.writeheader()
                writer.writerows(r for r in rows_csv if int(r["epoch"]) <= done)


class RunLog:
    """One row per epoch in metrics.csv / metrics.jsonl (rank 0 only).

    ``resumed_after``: the number of epochs the resumed state holds; rows past it are
    dropped. ``None`` (a fresh run) truncates logs left in ``out`` by an earlier run.
    """

    def __init__(
        self,
        out: Path,
        *,
        enabled: bool = True,
        tensorboard: bool = False,
        resumed_after: int | None = None,
    ) -> None:
        self.out = out
        self.enabled = enabled
        self._tb: Any = None
        if enabled:
            _keep_epochs(out, resumed_after)
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                warnings.warn("tensorboard is not installed; logging CSV/JSONL only", stacklevel=2)

    def epoch(
        self,
        epoch: int,
        *,
        train_loss: float,
        val_score: float,
        per_task: dict[str, float],
        seconds: float,
    ) -> None:
        """Record one epoch."""
        if not self.enabled:
            return
        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": round(train_loss, 6),
            "val_score": None if math.isnan(val_score) else round(val_score, 6),
            **{f"val_{k}": None if math.isnan(v) else round(v, 6) for k, v in per_task.items()},
            "seconds": round(seconds, 3),
        }
        with (self.out / METRICS_JSONL).open("ab") as fh:
            fh.write(orjson.dumps(row) + b"\n")
        path = self.out / METRICS_CSV
        new = not path.is_file()
        with path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self._tb is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, float):
                    self._tb.add_scalar(key, value, epoch)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
