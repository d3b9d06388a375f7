"""Where the model runs: CUDA when present (bf16 autocast), CPU otherwise."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["autocast_for", "resolve_device"]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` -> CUDA if available else CPU; otherwise the named device.

    Asking for CUDA on a machine without it is an error, not a silent fallback.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {dev} requested but CUDA is not available")
    return dev


@contextlib.contextmanager
def autocast_for(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """bf16 autocast on CUDA (matmuls and convolutions), a no-op on CPU.

    CPU stays in float32: CPU bf16 is slower than fp32 on most hosts without AMX.
    """
    if enabled and device.type == "cuda":
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            yield
    else:
        yield
