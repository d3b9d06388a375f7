"""``moe-health serve``: the CDS Hooks service on embedded defaults."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import typer

__all__ = ["AuthDecision", "decide_auth", "register"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class AuthDecision:
    """Whether the service may start, and with authentication on or off."""

    auth_off: bool
    refusal: str | None = None  # why the service must not start; ``None`` when it may


def decide_auth(
    host: str, *, insecure_no_auth: bool, auth_disabled: bool, has_issuers: bool
) -> AuthDecision:
    """The start-up authentication policy, kept pure so every branch is testable.

    Authentication is off when asked (``MOE_HEALTH_AUTH_DISABLED`` or ``--insecure-no-auth``)
    or, for the zero-configuration demo, when no issuer is configured and the service only
    listens on loopback. Off on any other interface needs the explicit flag: an
    environment variable left over from a demo must never expose an open service.
    """
    loopback = _is_loopback(host)
    auth_off = auth_disabled or insecure_no_auth or (not has_issuers and loopback)
    if auth_off and not loopback and not insecure_no_auth:
        return AuthDecision(
            auth_off=True,
            refusal=(
                "Client authentication is disabled (MOE_HEALTH_AUTH_DISABLED) and the "
                f"service would listen on {host}, which is not a loopback interface. "
                "Configure trusted issuers (MOE_HEALTH_TRUSTED_ISSUERS) and unset "
                "MOE_HEALTH_AUTH_DISABLED, or pass --insecure-no-auth for a throw-away demo."
            ),
        )
    if not auth_off and not has_issuers:
        return AuthDecision(
            auth_off=False,
            refusal=(
                "No trusted JWT issuers are configured (MOE_HEALTH_TRUSTED_ISSUERS) and the "
                f"service would listen on {host}. Configure issuers, or pass "
                "--insecure-no-auth for a throw-away demo."
            ),
        )
    return AuthDecision(auth_off=auth_off)


def serve(
    host: str | None = typer.Option(
        None,
        "--host",
        help="Interface to listen on (default: MOE_HEALTH_HOST, else 127.0.0.1). Keep "
        "127.0.0.1 for a local demo.",
        show_default=False,
    ),
    port: int | None = typer.Option(
        None,
        "--port",
        min=1,
        max=65535,
        help="TCP port to listen on (default: MOE_HEALTH_PORT, else 8080).",
        show_default=False,
    ),
    model: Path | None = typer.Option(
        None,
        "--model",
        help="Checkpoint folder to serve (default: MOE_HEALTH_MODEL_PATH, else the shipped "
        "synthetic demo model, which is not for clinical use).",
    ),
    insecure_no_auth: bool = typer.Option(
        False,
        "--insecure-no-auth",
        help="Accept calls without a client JWT even on a non-loopback interface. Never "
        "use this with real patient data. On 127.0.0.1 with no trusted issuers configured "
        "(MOE_HEALTH_TRUSTED_ISSUERS) authentication is already off for the local demo; "
        "MOE_HEALTH_AUTH_DISABLED=true alone is refused on any other interface.",
    ),
    workers: int = typer.Option(
        1, "--workers", min=1, max=64, help="Worker processes (each loads the model once)."
    ),
) -> None:
    """Start the CDS Hooks 2.0 service (discovery at /cds-services, demo EHR at /demo).

    Configuration comes from MOE_HEALTH_* environment variables or a .env file in the
    current folder (see deploy/example.env): model path, risk thresholds, trusted JWT
    issuers and their JWKS, CORS origins, DATABASE_URL (default: a SQLite file in the
    user data folder), request size and FHIR fetch limits.
    """
    import os

    import uvicorn

    from cds_hooks.config import get_settings
    from cds_hooks.logging_setup import AUTH_OFF_MESSAGE, configure_logging, log_auth_disabled

    if model is not None:
        os.environ["MOE_HEALTH_MODEL_PATH"] = str(model)
    get_settings.cache_clear()
    settings = get_settings()
    host = host if host is not None else settings.host  # one source: the settings class
    port = port if port is not None else settings.port
    decision = decide_auth(
        host,
        insecure_no_auth=insecure_no_auth,
        auth_disabled=settings.auth_disabled,
        has_issuers=bool(settings.trusted_issuers),
    )
    if decision.refusal is not None:
        typer.echo(decision.refusal, err=True)
        raise typer.Exit(code=2)
    if decision.auth_off and not settings.auth_disabled:
        os.environ["MOE_HEALTH_AUTH_DISABLED"] = "true"  # read by every worker's settings
    get_settings.cache_clear()
    settings = get_settings()
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    typer.echo(f"MoE-Health CDS Hooks service on http://{shown}:{port}")
    typer.echo(f"  demo EHR page : http://{shown}:{port}/demo")
    typer.echo(f"  discovery     : http://{shown}:{port}/cds-services")
    typer.echo(f"  API docs      : http://{shown}:{port}/docs")
    if settings.auth_disabled:
        typer.secho(f"  {AUTH_OFF_MESSAGE}", fg=typer.colors.RED, bold=True, err=True)
        configure_logging(settings.log_level, json_lines=settings.log_json)
        log_auth_disabled(host=host, insecure_no_auth=insecure_no_auth)
    uvicorn.run(
        "cds_hooks.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        timeout_graceful_shutdown=10,
    )


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the ``moe-health`` command."""
    app.command("serve")(serve)
