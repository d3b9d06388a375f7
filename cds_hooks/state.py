"""Everything the lifespan builds once per process and the routes share."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from anyio import to_thread

from cds_hooks.config import Settings
from cds_hooks.db import Repository
from cds_hooks.model_service import ModelService
from cds_hooks.privacy import Pseudonymiser
from cds_hooks.security import TokenVerifier

__all__ = ["AppState"]


@dataclass(slots=True)
class AppState:
    settings: Settings
    repository: Repository
    model: ModelService
    pseudonym: Pseudonymiser
    verifier: TokenVerifier | None
    model_version_id: int | None
    started_at: datetime
    fhir_transport: httpx.AsyncBaseTransport | None = None  # tests may inject one
    # Inference is CPU-bound: one model call at a time keeps latency predictable.
    inference_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def remember_jti(self, issuer: str, jti: str, expires_at: datetime) -> bool:
        return await to_thread.run_sync(self.repository.remember_jti, issuer, jti, expires_at)
