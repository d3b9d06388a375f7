"""Request and response bodies of the CDS Hooks 2.0 API (pydantic, validated at the edge)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "AcceptedSuggestion",
    "CDSRequest",
    "CDSResponse",
    "Coding",
    "DiscoveryResponse",
    "FeedbackItem",
    "FeedbackRequest",
    "FeedbackStored",
    "FhirAuthorization",
    "HookContext",
    "OverrideReason",
    "ServiceDescription",
]

WRITEBACK_EXTENSION = "org.moe-health.writeback"  # request extension: {"...": true}


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Coding(BaseModel):
    code: str = Field(min_length=1)
    system: str = Field(min_length=1)
    display: str | None = None


class FhirAuthorization(_Model):
    """The bearer token the EHR lends for reads on ``fhirServer``."""

    access_token: str = Field(min_length=1)
    token_type: Literal["Bearer", "bearer"]
    expires_in: int = Field(ge=0)
    scope: str
    subject: str
    patient: str | None = None


class HookContext(_Model):
    """``patient-view`` / ``encounter-discharge`` context (extra fields are kept)."""

    patientId: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9\-\.]+$")  # noqa: N815
    encounterId: str | None = Field(  # noqa: N815
        default=None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9\-\.]+$"
    )
    userId: str | None = None  # noqa: N815


class CDSRequest(_Model):
    """A hook call (CDS Hooks 2.0, "Calling a CDS Service")."""

    hook: str = Field(min_length=1)
    hookInstance: str = Field(min_length=1, max_length=200)  # noqa: N815
    fhirServer: AnyHttpUrl | None = None  # noqa: N815
    fhirAuthorization: FhirAuthorization | None = None  # noqa: N815
    context: HookContext
    prefetch: dict[str, Any] | None = None
    extension: dict[str, Any] | None = None

    @field_validator("hookInstance")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("hookInstance must not be blank")
        return value

    @model_validator(mode="after")
    def _server_with_token(self) -> CDSRequest:
        if self.fhirAuthorization is not None and self.fhirServer is None:
            raise ValueError("fhirServer is required when fhirAuthorization is given")
        return self

    @property
    def wants_writeback(self) -> bool:
        return bool((self.extension or {}).get(WRITEBACK_EXTENSION))


class ServiceDescription(BaseModel):
    hook: str
    title: str
    description: str
    id: str
    prefetch: dict[str, str]
    usageRequirements: str  # noqa: N815


class DiscoveryResponse(BaseModel):
    services: list[ServiceDescription]


class CDSResponse(BaseModel):
    """``cards`` (possibly empty) and optional ``systemActions``."""

    cards: list[dict[str, Any]]
    systemActions: list[dict[str, Any]] | None = None  # noqa: N815


class AcceptedSuggestion(BaseModel):
    id: str = Field(min_length=1)


class OverrideReason(BaseModel):
    reason: Coding | None = None
    userComment: str | None = Field(default=None, max_length=2000)  # noqa: N815


class FeedbackItem(BaseModel):
    card: str = Field(min_length=1, max_length=100)
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = None  # noqa: N815
    overrideReason: OverrideReason | None = None  # noqa: N815
    outcomeTimestamp: datetime  # noqa: N815

    @model_validator(mode="after")
    def _accepted_needs_suggestions(self) -> FeedbackItem:
        if self.outcome == "accepted" and not self.acceptedSuggestions:
            raise ValueError("an 'accepted' outcome needs acceptedSuggestions")
        return self


class FeedbackRequest(BaseModel):
    feedback: list[FeedbackItem] = Field(min_length=1, max_length=1000)


class FeedbackStored(BaseModel):
    card: str
    outcome: str
    acceptedSuggestions: list[dict[str, Any]]  # noqa: N815
    overrideReason: dict[str, Any] | None  # noqa: N815
    outcomeTimestamp: datetime  # noqa: N815
    receivedAt: datetime  # noqa: N815
