"""The ``moe-health`` console script.

It only wires subcommands to the packages that own them; each package exposes a
``register(app)`` function in its ``cli`` module. Heavy imports (torch, FastAPI)
happen inside the commands, so ``moe-health --help`` stays fast.
"""

from __future__ import annotations

import importlib

import typer

from moe_health import __version__

__all__ = ["app", "main"]

app = typer.Typer(
    name="moe-health",
    help=(
        "MoE-Health clinical risk models (in-hospital mortality, length of stay > 7 days, "
        "30-day readmission) from vitals/labs, notes and chest X-rays, for FHIR systems."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

# Packages that contribute commands, in the order their commands are listed.
_COMMAND_MODULES = (
    "cds_hooks.cli",
    "training.cli",
    "fhir_adapters.cli",
    "moe_core.cli",
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"moe-health {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """MoE-Health: multimodal mixture-of-experts risk prediction."""


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_all()


def main() -> None:
    app()
