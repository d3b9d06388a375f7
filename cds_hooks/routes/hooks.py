"""``POST /cds-services/{id}``: gather data, predict, answer with cards, audit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from anyio import to_thread
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.routing import APIRoute

from cds_hooks.cards import build_cards
from cds_hooks.deps import ClientDep, SettingsDep, StateDep
from cds_hooks.fhir_data import PreconditionFailedError, gather_resources
from cds_hooks.logging_setup import log_event
from cds_hooks.prediction import PredictionView
from cds_hooks.schemas import CDSRequest, CDSResponse
from cds_hooks.services import ServiceId, service_by_id
from moe_core.modalities import Task

__all__ = ["router"]



class _OrjsonRequest(Request):
    """Parses the JSON body with orjson (several times faster on megabyte prefetches)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())  # JSONDecodeError -> 400 upstream
        return self._json


class _OrjsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def orjson_handler(request: Request) -> Response:
            return await handler(_OrjsonRequest(request.scope, request.receive))

        return orjson_handler


router = APIRouter(tags=["hooks"], route_class=_OrjsonRoute)

# Readmission is decided at discharge: it leads there; on patient-view the acute risks lead.
_TASK_ORDER = {
    ServiceId.PATIENT_VIEW: (Task.MORTALITY, Task.LONG_LOS, Task.READMISSION),
    ServiceId.ENCOUNTER_DISCHARGE: (Task.READMISSION, Task.MORTALITY, Task.LONG_LOS),
}


async def predict_serialised(
    lock: asyncio.Lock, timeout_s: float, predict: Callable[[], PredictionView]
) -> PredictionView:
    """Run ``predict`` in a worker thread, one at a time; 503 after ``timeout_s``.

    A thread cannot be stopped, so on timeout the caller gets its 503 at once while the
    thread runs on. The lock stays held until that thread has finished (released by the
    task's done-callback, not by leaving this function): otherwise each timed-out
    request would leave a model call behind and the next one would start beside it,
    piling up CPU-bound threads exactly when the service is already too slow.
    """
    await lock.acquire()
    task = asyncio.ensure_future(to_thread.run_sync(predict))
    task.add_done_callback(lambda t: _release_after(lock, t))
    try:
        return await asyncio.wait_for(asyncio.shield(task), timeout=timeout_s)
    except TimeoutError as exc:
        log_event("prediction_timeout", logging.WARNING, timeout_s=timeout_s)
        raise HTTPException(status_code=503, detail="prediction timed out") from exc


def _release_after(lock: asyncio.Lock, task: asyncio.Future[PredictionView]) -> None:
    """Done-callback: free the model for the next call; retrieve an abandoned result's
    exception so asyncio does not report it as never retrieved."""
    lock.release()
    if not task.cancelled():
        task.exception()


def base_url(request: Request, public_base_url: str | None) -> str:
    """Absolute base of this app as the EHR sees it."""
    if public_base_url:
        return public_base_url.rstrip("/")
    return f"{request.url.scheme}://{request.url.netloc}"


@router.post(
    "/cds-services/{service_id}",
    response_model=CDSResponse,
    responses={
        400: {"description": "Malformed JSON or an invalid CDS Hooks request"},
        401: {"description": "Missing or invalid client JWT"},
        404: {"description": "Unknown service"},
        412: {"description": "Required FHIR data could not be obtained"},
        413: {"description": "Request body too large"},
    },
)
async def call_service(
    service_id: str,
    body: CDSRequest,
    request: Request,
    state: StateDep,
    settings: SettingsDep,
    _client: ClientDep,
) -> Response:
    """Risk cards for the admission in context (empty cards when the model abstains)."""
    t0 = time.perf_counter()
    service = service_by_id(service_id)
    if service is None:
        raise HTTPException(status_code=404, detail=f"unknown CDS service {service_id!r}")
    if body.hook != service.hook:
        raise HTTPException(
            status_code=400,
            detail=f"service {service_id!r} answers hook {service.hook!r}, not {body.hook!r}",
        )
    if service.encounter_in_context and not body.context.encounterId:
        raise HTTPException(
            status_code=400, detail=f"hook {service.hook!r} needs context.encounterId"
        )
    context = body.context.model_dump(exclude_none=True)
    patient_key = state.pseudonym(f"Patient/{body.context.patientId}")
    token = body.fhirAuthorization.access_token if body.fhirAuthorization else None
    server = str(body.fhirServer) if body.fhirServer else None

    try:
        gathered = await gather_resources(
            service, context, body.prefetch, settings, server, token,
            window_hours=state.model.window_hours,
            transport=state.fhir_transport,
        )
    except PreconditionFailedError as exc:
        log_event(
            "precondition_failed", logging.WARNING,
            service=service_id, patient=patient_key, reason=str(exc),
        )
        raise

    view = await predict_serialised(
        state.inference_lock,
        settings.request_timeout_s,
        lambda: state.model.predict_view(
            gathered.all_resources(),
            body.context.patientId,
            body.context.encounterId,
            gathered.notes,
            server,
            token,
        ),
    )

    base = base_url(request, settings.public_base_url)
    card_set = build_cards(
        view,
        model=state.model.info(base),
        thresholds=settings.thresholds,
        tasks=_TASK_ORDER[service.id],
        risk_assessment=state.model.risk_assessment,
        writeback=settings.writeback or body.wants_writeback,
    )
    latency_ms = (time.perf_counter() - t0) * 1000
    modalities: dict[str, Any] = {
        "used": list(view.modalities_used),
        "missing": list(view.modalities_missing),
        "sources": {str(k): v for k, v in gathered.source.items()},
    }
    await to_thread.run_sync(
        lambda: state.repository.record_prediction(
            hook_instance=body.hookInstance,
            service_id=service_id,
            patient_key=patient_key,
            model_version=state.model.version,
            model_version_id=state.model_version_id,
            risks=view.risks,
            modalities=modalities,
            card_uuids=[c["uuid"] for c in card_set.cards],
            abstain_reason=view.abstain_reason,
            latency_ms=latency_ms,
        )
    )
    if view.abstain_reason is not None:
        log_event(
            "model_abstained", service=service_id, patient=patient_key,
            hook_instance=body.hookInstance, reason=view.abstain_reason,
        )
    log_event(
        "prediction",
        service=service_id,
        patient=patient_key,
        hook_instance=body.hookInstance,
        model_version=state.model.version,
        risks={k: round(v, 4) for k, v in view.risks.items()},
        modalities_used=list(view.modalities_used),
        cards=len(card_set.cards),
        latency_ms=round(latency_ms, 1),
    )
    return Response(orjson.dumps(card_set.response()), media_type="application/json")

