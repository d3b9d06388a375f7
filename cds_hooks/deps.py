"""FastAPI dependencies, as ``Annotated`` aliases used by every router."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from cds_hooks.config import Settings, get_settings
from cds_hooks.db import Repository
from cds_hooks.model_service import ModelService
from cds_hooks.security import AuthError, TokenClaims
from cds_hooks.state import AppState

__all__ = ["ClientDep", "ModelDep", "RepoDep", "SettingsDep", "StateDep"]


def get_state(request: Request) -> AppState:
    """What the lifespan loaded (model, database, verifier)."""
    state: AppState = request.app.state.cds
    return state


SettingsDep = Annotated[Settings, Depends(get_settings)]
StateDep = Annotated[AppState, Depends(get_state)]


def get_repository(state: StateDep) -> Repository:
    return state.repository


def get_model(state: StateDep) -> ModelService:
    return state.model


RepoDep = Annotated[Repository, Depends(get_repository)]
ModelDep = Annotated[ModelService, Depends(get_model)]


def audience_of(request: Request, settings: Settings) -> list[str]:
    """The URL(s) a JWT's ``aud`` must name for this request."""
    path = request.url.path
    if settings.public_base_url:
        base = settings.public_base_url.rstrip("/")
    else:
        base = f"{request.url.scheme}://{request.url.netloc}"
    url = base + path
    return [url, url.rstrip("/")] if url.endswith("/") else [url]


async def authenticate_client(
    request: Request, state: StateDep, settings: SettingsDep
) -> TokenClaims | None:
    """The verified caller; ``None`` only when authentication is switched off."""
    if settings.auth_disabled:
        return None
    if state.verifier is None:
        raise AuthError("no trusted issuers are configured (MOE_HEALTH_TRUSTED_ISSUERS)")
    return await state.verifier.verify(
        request.headers.get("authorization"), audience_of(request, settings)
    )


ClientDep = Annotated[TokenClaims | None, Depends(authenticate_client)]
