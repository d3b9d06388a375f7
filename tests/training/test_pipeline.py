"""End to end through the CLI: synth -> build-cohort -> train -> evaluate, and the same on
the real MIMIC-IV demo (build -> train -> evaluate)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moe_health.cli import app

TINY_TRAIN = ["--hidden", "16", "--batch-size", "16", "--lr", "0.003", "--device", "cpu",
              "--no-progress", "--pretrain-epochs", "1"]  # fmt: skip


def _invoke(args: list[str]) -> str:
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_synthetic_pipeline_learns_the_signal(tmp_path: Path) -> None:
    ndjson, cohort, run, report = (tmp_path / n for n in ("ndjson", "cohort", "run", "report"))
    _invoke(["synth", "--patients", "600", "--out", str(ndjson), "--seed", "4",
             "--no-images", "--no-progress"])  # fmt: skip
    _invoke(["build-cohort", "--fhir-ndjson", str(ndjson), "--out", str(cohort),
             "--no-progress"])  # fmt: skip
    _invoke(["train", "--cohort", str(cohort), "--out", str(run), "--epochs", "8",
             "--tasks", "mortality,long_los", "--patience", "8", *TINY_TRAIN])  # fmt: skip
    text = _invoke(["evaluate", "--cohort", str(cohort), "--checkpoint", str(run / "model"),
                    "--out", str(report), "--bootstrap", "100", "--device", "cpu",
                    "--no-progress"])  # fmt: skip
    assert "long_los" in text
    result = json.loads((report / "evaluation.json").read_text())
    long_los = result["tasks"]["long_los"]["metrics"]["auroc"]["value"]
    assert long_los > 0.65, result["tasks"]["long_los"]
    assert (report / "roc.png").stat().st_size > 0 and (report / "gates.png").is_file()


@pytest.mark.slow
def test_mimic_demo_pipeline_build_train_evaluate(shared_data: Path, tmp_path: Path) -> None:
    cohort, run, report = tmp_path / "cohort", tmp_path / "run", tmp_path / "report"
    _invoke(["build-cohort", "--mimic-dir", str(shared_data / "mimic-iv-demo-2.2"),
             "--out", str(cohort), "--no-progress"])  # fmt: skip
    _invoke(["train", "--cohort", str(cohort), "--out", str(run), "--epochs", "2",
             *TINY_TRAIN])  # fmt: skip
    _invoke(["evaluate", "--cohort", str(cohort), "--checkpoint", str(run / "model"),
             "--out", str(report), "--bootstrap", "50", "--device", "cpu", "--no-progress"])
    result = json.loads((report / "evaluation.json").read_text())
    assert set(result["tasks"]) == {"mortality", "long_los", "readmission"}
    assert result["tasks"]["long_los"]["n"] > 0
    assert list(result["per_combination"]) == ["E"]  # the demo has no notes or images
