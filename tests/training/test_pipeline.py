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


@pytest.mark.slow
def test_evaluate_paper_writes_tables_1_2_3_and_plots(synth_cohort: Path, tmp_path: Path) -> None:
    from training.paper import ABLATION_ROWS, BASELINE_ROWS, TABLE2_NOTE

    out = tmp_path / "paper"
    text = _invoke(["evaluate", "--paper", "--cohort", str(synth_cohort), "--out", str(out),
                    "--epochs", "1", "--pretrain-epochs", "0", "--hidden", "8",
                    "--bootstrap", "20", "--device", "cpu", "--no-progress"])  # fmt: skip
    assert "Small-scale reproduction: each model trains at most 1 epochs (paper: 50)" in text
    doc = json.loads((out / "paper.json").read_text())
    assert doc["config"]["epochs"] == 1 and doc["config"]["pretrain_epochs"] == 0
    assert doc["scale"].startswith("Small-scale reproduction")
    assert doc["skipped"] == {}
    tasks = {"mortality", "long_los", "readmission"}
    names = [n for n, _ in (*BASELINE_ROWS, *ABLATION_ROWS)]
    assert list(doc["table1"]) == names
    for name in names:
        assert set(doc["table1"][name]) == tasks, name
        auroc = doc["table1"][name]["mortality"]["metrics"]["auroc"]
        assert auroc["value"] is None or 0.0 <= auroc["value"] <= 1.0
    combos = set(doc["table2"])
    assert {"E", "E+T", "E+T+I"} <= combos <= {"E", "E+T", "E+I", "E+T+I"}
    assert sum(e["n"] for e in doc["table2"].values()) == doc["test_admissions"]
    assert set(doc["gates"]) == combos

    md = (out / "paper.md").read_text()
    assert md.startswith("# MoE-Health: paper tables on")
    assert "**Small-scale reproduction" in md and TABLE2_NOTE in md
    t1, t2, t3 = (md.index(f"## Table {i}") for i in (1, 2, 3))
    assert t1 < t2 < t3
    for name, _ in BASELINE_ROWS:
        assert f"| {name} | " in md[t1:t2], name
    for combo in combos:
        assert f"| {combo} | " in md[t2:t3], combo
    assert "| MoE-Health (full) | " in md[t3:]
    for name, _ in ABLATION_ROWS:
        assert f"| {name} | " in md[t3:], name
    for png in ("gates.png", "reliability.png", *(f"roc_{t}.png" for t in sorted(tasks))):
        assert (out / png).stat().st_size > 1000, png
