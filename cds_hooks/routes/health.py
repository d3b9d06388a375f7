"""Liveness (``/healthz``) and readiness (``/readyz``: model loaded, database answers)."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from cds_hooks.deps import StateDep

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep) -> JSONResponse:
    """Ready to score: the model is loaded and the database answers."""

    def db_ok() -> bool:
        try:
            with state.repository.db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:  # any driver error means "not ready"
            return False

    ok_db = await to_thread.run_sync(db_ok)
    body = {
        "status": "ready" if ok_db else "not ready",
        "database": "ok" if ok_db else "unavailable",
        "model": f"{state.model.name} {state.model.version}",
        "auth": "disabled" if state.settings.auth_disabled else "required",
    }
    return JSONResponse(body, status_code=200 if ok_db else 503)
