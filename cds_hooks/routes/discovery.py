"""``GET /cds-services``: the discovery document."""

from __future__ import annotations

from fastapi import APIRouter

from cds_hooks.deps import ClientDep, SettingsDep
from cds_hooks.schemas import DiscoveryResponse, ServiceDescription
from cds_hooks.services import SERVICES

__all__ = ["router"]

router = APIRouter(tags=["discovery"])


@router.get("/cds-services", response_model=DiscoveryResponse, response_model_exclude_none=True)
async def discover(settings: SettingsDep, _client: ClientDep) -> DiscoveryResponse:
    """The services offered, each with its hook and prefetch templates."""
    return DiscoveryResponse(
        services=[
            ServiceDescription(
                hook=s.hook,
                title=s.title,
                description=s.description,
                id=s.id,
                prefetch=s.prefetch(settings.lookback_days),
                usageRequirements=s.usage_requirements,
            )
            for s in SERVICES
        ]
    )
