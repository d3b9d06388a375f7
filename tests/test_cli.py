"""The console script lists every subcommand and explains it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from moe_health import __version__
from moe_health.cli import app

COMMANDS = (
    "serve",
    "synth",
    "build-cohort",
    "train",
    "evaluate",
    "score",
    "export-fhir",
    "model-card",
)


def test_help_lists_every_subcommand() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_each_subcommand_has_help(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_version_flag_prints_the_package_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "moe_health", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == f"moe-health {__version__}"
