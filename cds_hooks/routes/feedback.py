"""``POST /cds-services/{id}/feedback`` (store) and ``GET`` (read back, per card)."""

from __future__ import annotations

from datetime import UTC, datetime

from anyio import to_thread
from fastapi import APIRouter, HTTPException, Query, Response

from cds_hooks.deps import ClientDep, RepoDep
from cds_hooks.logging_setup import log_event
from cds_hooks.schemas import FeedbackRequest, FeedbackStored
from cds_hooks.services import service_by_id

__all__ = ["router"]

router = APIRouter(tags=["feedback"])


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _known(service_id: str) -> None:
    if service_by_id(service_id) is None:
        raise HTTPException(status_code=404, detail=f"unknown CDS service {service_id!r}")


@router.post("/cds-services/{service_id}/feedback", status_code=200)
async def post_feedback(
    service_id: str, body: FeedbackRequest, repo: RepoDep, _client: ClientDep
) -> Response:
    """Store what the clinician did with each card (accepted / overridden)."""
    _known(service_id)

    def store() -> None:
        for item in body.feedback:
            repo.record_feedback(
                service_id=service_id,
                card_uuid=item.card,
                outcome=item.outcome,
                outcome_timestamp=_utc(item.outcomeTimestamp),
                accepted_suggestions=[a.model_dump() for a in item.acceptedSuggestions or ()],
                override_reason=(
                    item.overrideReason.model_dump(exclude_none=True)
                    if item.overrideReason
                    else None
                ),
            )

    await to_thread.run_sync(store)
    log_event("feedback_stored", service=service_id, count=len(body.feedback))
    return Response(status_code=200)


@router.get("/cds-services/{service_id}/feedback", response_model=list[FeedbackStored])
async def get_feedback(
    service_id: str,
    repo: RepoDep,
    _client: ClientDep,
    card: str | None = Query(default=None, description="Only feedback on this card uuid."),
) -> list[FeedbackStored]:
    """Stored feedback of a service, oldest first."""
    _known(service_id)
    rows = await to_thread.run_sync(lambda: repo.feedback(service_id=service_id, card_uuid=card))
    return [
        FeedbackStored(
            card=r.card_uuid,
            outcome=r.outcome,
            acceptedSuggestions=r.accepted_suggestions,
            overrideReason=r.override_reason,
            outcomeTimestamp=_utc(r.outcome_timestamp),
            receivedAt=_utc(r.received_at),
        )
        for r in rows
    ]
