"""``moe-health serve``: help text and the authentication policy at start-up."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from cds_hooks.cli import decide_auth
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


class _FakeUvicorn:
    """Stands in for ``uvicorn.run``: records how the service would have been started."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, app: str, **kw: Any) -> None:
        self.calls.append({"app": app, **kw})


@pytest.fixture
def fake_uvicorn(monkeypatch: pytest.MonkeyPatch) -> Iterator[_FakeUvicorn]:
    """A clean environment for ``serve`` (no issuers, auth on) and no real server."""
    from cds_hooks.config import get_settings

    fake = _FakeUvicorn()
    monkeypatch.setattr("uvicorn.run", fake)
    for name in ("MOE_HEALTH_HOST", "MOE_HEALTH_PORT", "MOE_HEALTH_MODEL_PATH"):
        monkeypatch.delenv(name, raising=False)
    # setenv (not delenv) so the test restores whatever serve() writes into os.environ
    monkeypatch.setenv("MOE_HEALTH_TRUSTED_ISSUERS", "{}")
    monkeypatch.setenv("MOE_HEALTH_AUTH_DISABLED", "false")
    get_settings.cache_clear()
    yield fake
    get_settings.cache_clear()


def test_auth_disabled_by_env_is_refused_on_a_public_interface(
    fake_uvicorn: _FakeUvicorn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOE_HEALTH_AUTH_DISABLED", "true")
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--port", "9"])
    assert result.exit_code == 2, result.output
    assert "not a loopback interface" in result.output and "--insecure-no-auth" in result.output
    assert fake_uvicorn.calls == []


def test_auth_disabled_by_env_is_refused_on_a_public_interface_even_with_issuers(
    fake_uvicorn: _FakeUvicorn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOE_HEALTH_TRUSTED_ISSUERS", '{"https://ehr.example.org": "/k.json"}')
    monkeypatch.setenv("MOE_HEALTH_AUTH_DISABLED", "true")
    result = CliRunner().invoke(app, ["serve", "--host", "10.1.2.3"])
    assert result.exit_code == 2 and fake_uvicorn.calls == []


def test_insecure_no_auth_starts_on_a_public_interface_with_a_loud_logged_warning(
    fake_uvicorn: _FakeUvicorn, caplog: pytest.LogCaptureFixture
) -> None:
    import os

    with caplog.at_level(logging.WARNING, logger="moe_health.cds"):
        result = CliRunner().invoke(
            app, ["serve", "--host", "0.0.0.0", "--port", "9", "--insecure-no-auth"]
        )
    assert result.exit_code == 0, result.output
    assert [(c["host"], c["port"]) for c in fake_uvicorn.calls] == [("0.0.0.0", 9)]
    assert os.environ["MOE_HEALTH_AUTH_DISABLED"] == "true"  # what the workers will read
    assert "client authentication is OFF" in result.output
    warned = [r for r in caplog.records if r.getMessage() == "auth_disabled"]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    assert "never with real patient data" in getattr(warned[0], "fields", {})["message"]


def test_auth_disabled_on_loopback_starts_with_the_logged_warning(
    fake_uvicorn: _FakeUvicorn, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MOE_HEALTH_AUTH_DISABLED", "true")
    with caplog.at_level(logging.WARNING, logger="moe_health.cds"):
        result = CliRunner().invoke(app, ["serve", "--port", "9"])
    assert result.exit_code == 0, result.output
    assert fake_uvicorn.calls[0]["host"] == "127.0.0.1"
    assert any(r.getMessage() == "auth_disabled" for r in caplog.records)


def test_auth_on_logs_no_warning(
    fake_uvicorn: _FakeUvicorn, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MOE_HEALTH_TRUSTED_ISSUERS", '{"https://ehr.example.org": "/k.json"}')
    with caplog.at_level(logging.WARNING, logger="moe_health.cds"):
        result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 0, result.output
    assert not any(r.getMessage() == "auth_disabled" for r in caplog.records)
    assert "authentication is OFF" not in result.output


def test_host_and_port_default_from_the_settings_class(
    fake_uvicorn: _FakeUvicorn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOE_HEALTH_HOST", "127.0.0.2")
    monkeypatch.setenv("MOE_HEALTH_PORT", "9123")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 0, result.output
    assert (fake_uvicorn.calls[0]["host"], fake_uvicorn.calls[0]["port"]) == ("127.0.0.2", 9123)
    assert "http://127.0.0.2:9123/cds-services" in result.output


def test_command_line_host_and_port_override_the_settings(
    fake_uvicorn: _FakeUvicorn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOE_HEALTH_HOST", "127.0.0.2")
    monkeypatch.setenv("MOE_HEALTH_PORT", "9123")
    result = CliRunner().invoke(app, ["serve", "--host", "127.0.0.3", "--port", "9200"])
    assert result.exit_code == 0, result.output
    assert (fake_uvicorn.calls[0]["host"], fake_uvicorn.calls[0]["port"]) == ("127.0.0.3", 9200)


@pytest.mark.parametrize(
    ("host", "insecure", "disabled", "issuers", "off", "refused"),
    [
        ("127.0.0.1", False, False, False, True, False),  # zero-config local demo
        ("127.0.0.1", False, False, True, False, False),
        ("0.0.0.0", False, False, True, False, False),
        ("0.0.0.0", False, False, False, False, True),  # open service, no issuers
        ("0.0.0.0", False, True, True, True, True),  # env var alone never opens it
        ("0.0.0.0", True, False, False, True, False),  # explicit flag
        ("::1", False, True, False, True, False),
    ],
)
def test_auth_policy(
    host: str, insecure: bool, disabled: bool, issuers: bool, off: bool, refused: bool
) -> None:
    decision = decide_auth(
        host, insecure_no_auth=insecure, auth_disabled=disabled, has_issuers=issuers
    )
    assert decision.auth_off is off and (decision.refusal is not None) is refused
