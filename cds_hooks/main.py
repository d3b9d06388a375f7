"""The FastAPI application: ``create_app(settings)``; the model and database load in the
lifespan, never at import."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from cds_hooks.config import Settings, get_settings
from cds_hooks.db import Database, Repository
from cds_hooks.fhir_data import PreconditionFailedError
from cds_hooks.logging_setup import configure_logging, log_auth_disabled, log_event
from cds_hooks.middleware import BodySizeLimit, RequestTiming
from cds_hooks.model_service import ModelService
from cds_hooks.privacy import Pseudonymiser, load_or_create_key
from cds_hooks.routes import demo, discovery, feedback, health, hooks
from cds_hooks.security import AuthError, JWKSCache, TokenVerifier
from cds_hooks.state import AppState
from moe_health import __version__

__all__ = ["create_app", "operation_outcome"]


def operation_outcome(status: int, code: str, text: str, **extra: Any) -> Response:
    """A FHIR OperationOutcome error body (what the spec asks for on non-2xx)."""
    body: dict[str, Any] = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
        **extra,
    }
    headers = {"WWW-Authenticate": 'Bearer realm="cds-services"'} if status == 401 else None
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx") or {}
            return f"malformed JSON body: {ctx.get('error', 'could not be parsed')}"
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg')}")
    return "invalid request: " + "; ".join(parts)


async def _build_state(settings: Settings, model: ModelService | None) -> AppState:
    db = Database(settings.resolved_database_url)
    await to_thread.run_sync(db.migrate)
    repo = Repository(db)
    if model is None:
        model = await to_thread.run_sync(ModelService.load, settings)
    model_version_id = await to_thread.run_sync(
        lambda: repo.register_model(**model.registry_fields())
    )
    key = (
        settings.pseudonym_key.get_secret_value().encode()
        if settings.pseudonym_key
        else load_or_create_key(settings.data_dir)
    )
    state = AppState(
        settings=settings,
        repository=repo,
        model=model,
        pseudonym=Pseudonymiser(key),
        verifier=None,
        model_version_id=model_version_id,
        started_at=datetime.now(UTC),
    )
    if settings.trusted_issuers:
        state.verifier = TokenVerifier(
            trusted_issuers=settings.trusted_issuers,
            algorithms=settings.jwt_algorithms,
            jwks=JWKSCache(
                settings.jwks_cache_ttl_s, min_refresh_s=settings.jwks_min_refresh_s
            ),
            remember_jti=state.remember_jti,
            leeway_s=settings.jwt_leeway_s,
            max_age_s=settings.jwt_max_age_s,
        )
    return state


def _freeze_startup_heap() -> None:
    """Move everything alive after startup (the model, its encoders, torch and library
    objects: millions of them) out of the garbage collector's reach.

    A hook call allocates thousands of short-lived objects (a 2,000-Observation prefetch),
    which every few calls triggers a full collection; without this it rescans the whole
    startup heap each time: a ~280 ms stall every sixth call on a 2-core host
    (``benchmarks/bench_cds.py``). Objects created later are collected as usual.
    """
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None, model: ModelService | None = None) -> FastAPI:
    """The CDS Hooks service; ``settings`` default to ``get_settings()`` (env + .env).

    ``model`` lets several apps in one process share a loaded model (tests, embedding);
    by default the lifespan loads ``settings.model_path``.
    """
    settings = settings or get_settings()
    configure_logging(settings.log_level, json_lines=settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.auth_disabled:
            log_auth_disabled()
        if settings.torch_threads:
            import torch

            torch.set_num_threads(settings.torch_threads)
        state = await _build_state(settings, model)
        app.state.cds = state
        _freeze_startup_heap()
        log_event(
            "service_ready",
            model=state.model.name,
            model_version=state.model.version,
            database=state.repository.db.engine.url.get_backend_name(),
            auth="disabled" if settings.auth_disabled else "required",
        )
        try:
            yield
        finally:
            state.repository.db.dispose()

    app = FastAPI(
        title="MoE-Health CDS Hooks service",
        version=__version__,
        description=(
            "CDS Hooks 2.0 services giving in-hospital mortality, length-of-stay > 7 days "
            "and 30-day readmission risk cards from vitals/labs, notes and chest X-rays."
        ),
        lifespan=lifespan,
    )
    app.dependency_overrides[get_settings] = lambda: settings

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_r: Request, exc: RequestValidationError) -> Response:
        return operation_outcome(400, "invalid", _describe_validation(exc))

    @app.exception_handler(AuthError)
    async def _unauthorised(_r: Request, exc: AuthError) -> Response:
        log_event("auth_rejected", logging.WARNING, reason=str(exc))
        return operation_outcome(401, "login", str(exc))

    @app.exception_handler(PreconditionFailedError)
    async def _precondition(_r: Request, exc: PreconditionFailedError) -> Response:
        return operation_outcome(412, "not-found", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_r: Request, exc: StarletteHTTPException) -> Response:
        codes = {404: "not-found", 400: "invalid", 413: "too-costly", 503: "transient"}
        code = codes.get(exc.status_code, "processing")
        return operation_outcome(exc.status_code, code, str(exc.detail))

    for module in (discovery, hooks, feedback, health, demo):
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    async def _root() -> RedirectResponse:
        return RedirectResponse("/demo")

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    # The last added runs first: timing wraps the size limit, so 413s are logged too.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(RequestTiming)
    return app
