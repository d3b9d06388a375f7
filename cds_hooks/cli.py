"""``moe-health serve``: the CDS Hooks service on embedded defaults."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import typer

__all__ = ["register"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Interface to listen on. Keep 127.0.0.1 for a local demo."
    ),
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="TCP port to listen on."),
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
        "(MOE_HEALTH_TRUSTED_ISSUERS) authentication is already off for the local demo.",
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

    if model is not None:
        os.environ["MOE_HEALTH_MODEL_PATH"] = str(model)
    settings = get_settings()
    if not settings.trusted_issuers and not settings.auth_disabled:
        if _is_loopback(host) or insecure_no_auth:
            os.environ["MOE_HEALTH_AUTH_DISABLED"] = "true"
        else:
            typer.echo(
                "No trusted JWT issuers are configured (MOE_HEALTH_TRUSTED_ISSUERS) and the "
                f"service would listen on {host}. Configure issuers, or pass "
                "--insecure-no-auth for a throw-away demo.",
                err=True,
            )
            raise typer.Exit(code=2)
    elif insecure_no_auth:
        os.environ["MOE_HEALTH_AUTH_DISABLED"] = "true"
    get_settings.cache_clear()
    settings = get_settings()
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    typer.echo(f"MoE-Health CDS Hooks service on http://{shown}:{port}")
    typer.echo(f"  demo EHR page : http://{shown}:{port}/demo")
    typer.echo(f"  discovery     : http://{shown}:{port}/cds-services")
    typer.echo(f"  API docs      : http://{shown}:{port}/docs")
    if settings.auth_disabled:
        typer.secho(
            "  WARNING: client authentication is OFF (local demo mode). Not for real data.",
            fg=typer.colors.RED,
            bold=True,
            err=True,
        )
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
