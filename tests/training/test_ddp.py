"""DDP with torchrun on CPU (gloo): two ranks train one model and agree on its weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from moe_core.checkpoint import load_checkpoint
from moe_core.feature_catalog import DEFAULT_SPEC
from tests.conftest import free_port


@pytest.mark.slow
def test_torchrun_two_processes_agree_and_rank0_writes(
    synth_cohort: Path, tmp_path: Path
) -> None:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    out = tmp_path / "ddp"
    cmd = [
        torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), "-m", "moe_health", "train",
        "--cohort", str(synth_cohort), "--out", str(out), "--device", "cpu",
        "--epochs", "2", "--pretrain-epochs", "1", "--hidden", "16", "--batch-size", "16",
        "--tasks", "mortality,long_los", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2  # the run that wrote it was distributed
    loaded = load_checkpoint(out / "model", spec=DEFAULT_SPEC, load_text_backbone=False)
    assert loaded.model.tasks == ("mortality", "long_los")
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # one row per epoch: only rank 0 logs
