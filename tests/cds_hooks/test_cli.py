"""``moe-health serve``: help text and the authentication policy at start-up."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from moe_health.cli import app


def test_serve_help_explains_options() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--model", "--insecure-no-auth", "--workers"):
        assert option in result.output
    assert "127.0.0.1" in result.output


def test_serve_refuses_public_interface_without_trusted_issuers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cds_hooks.config import get_settings

    monkeypatch.delenv("MOE_HEALTH_TRUSTED_ISSUERS", raising=False)
    monkeypatch.delenv("MOE_HEALTH_AUTH_DISABLED", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--port", "9"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "No trusted JWT issuers" in result.output
