"""Distributed data parallel set-up for ``torchrun`` launches.

``torchrun --nproc_per_node N -m moe_health train ...`` sets ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK``; ``init_distributed`` reads them and starts a process group with
``nccl`` on GPUs and ``gloo`` on CPUs. Without them it returns a single-process
context, so the same training code runs either way. Rank 0 writes checkpoints and
logs; every rank evaluates the (small) validation split itself, so all ranks reach the
same early-stopping decision without extra communication.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DistContext",
    "agree_on_all_ranks",
    "all_reduce_mean",
    "barrier",
    "init_distributed",
    "shutdown",
]


@dataclass(frozen=True, slots=True)
class DistContext:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None: not distributed

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _pick_device(requested: str, local_rank: int) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {requested!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def init_distributed(device: str = "auto") -> DistContext:
    """Start the process group when launched by torchrun; else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _pick_device(device, local)
    if world <= 1:
        return DistContext(0, 1, 0, dev, None)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(rank, world, local, dev, backend)


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op in a single process)."""
    if ctx.distributed:
        dist.barrier()


def all_reduce_mean(value: float, ctx: DistContext) -> float:
    """Mean of a scalar over ranks."""
    if not ctx.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / ctx.world_size


def agree_on_all_ranks(value: str, ctx: DistContext) -> bool:
    """Whether every rank holds the same ``value`` (e.g. a hash of the model weights)."""
    if not ctx.distributed:
        return True
    gathered: list[object] = [None] * ctx.world_size
    dist.all_gather_object(gathered, value)
    return all(g == value for g in gathered)


def shutdown(ctx: DistContext) -> None:
    """Tear the process group down (no-op in a single process)."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
