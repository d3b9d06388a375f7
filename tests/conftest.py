"""Fixtures shared by the whole suite: the data folder beside the repo and server rules."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository (real, openly licensed data sets)."""
    if not SHARED_DATA.is_dir():
        if IN_CI:
            pytest.fail(f"shared data folder missing: {SHARED_DATA}")
        pytest.skip(f"shared data folder missing: {SHARED_DATA}")
    return SHARED_DATA


def require_executable(name: str, *candidates: str) -> str:
    """Path of a server binary; fails under CI=true (never a silent skip), skips elsewhere."""
    # Console scripts of the running environment sit beside its interpreter, which may
    # not be on PATH (``.venv/bin/python -m pytest``).
    search_path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    for cand in (name, *candidates):
        found = shutil.which(cand, path=search_path) or (cand if Path(cand).is_file() else None)
        if found:
            return found
    msg = f"{name} is not installed (bash .ci/run installs it)"
    if IN_CI:
        pytest.fail(msg)
    pytest.skip(msg)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
