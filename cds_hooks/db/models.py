"""Tables: model registry, prediction audit log, card feedback, batch jobs, seen JWT ids.

No table holds a patient identifier: patients appear only as keyed HMAC pseudonyms.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "BatchJob", "Feedback", "ModelVersion", "Prediction", "SeenToken"]


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base; ``metadata`` is what the Alembic migrations describe."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class ModelVersion(Base):
    """A checkpoint the service has loaded (one row per name + version + checksum)."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version", "checksum"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(100))
    spec_version: Mapped[str] = mapped_column(String(100))
    checksum: Mapped[str] = mapped_column(String(128))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    path: Mapped[str] = mapped_column(Text)
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Prediction(Base):
    """Audit log: one row per hook call that reached the model (abstentions included)."""

    __tablename__ = "predictions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hook_instance: Mapped[str] = mapped_column(String(200), index=True)
    service_id: Mapped[str] = mapped_column(String(100))
    patient_key: Mapped[str] = mapped_column(String(64), index=True)  # HMAC pseudonym
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id"), nullable=True
    )
    model_version: Mapped[str] = mapped_column(String(100))
    risks: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    modalities: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    card_uuids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    abstain_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    latency_ms: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Feedback(Base):
    """What a clinician did with a card (CDS Hooks feedback), one row per report."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    service_id: Mapped[str] = mapped_column(String(100))
    card_uuid: Mapped[str] = mapped_column(String(100), index=True)
    outcome: Mapped[str] = mapped_column(String(20))  # "accepted" | "overridden"
    accepted_suggestions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    override_reason: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    outcome_timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class BatchJob(Base):
    """A batch scoring run (bulk export in, RiskAssessments out)."""

    __tablename__ = "batch_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(String(100), unique=True)
    # "running" | "succeeded" | "partial" | "failed"
    status: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(Text)
    model_version: Mapped[str] = mapped_column(String(100))
    engine: Mapped[str] = mapped_column(String(20), default="local")
    n_records: Mapped[int] = mapped_column(Integer, default=0)
    n_abstained: Mapped[int] = mapped_column(Integer, default=0)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SeenToken(Base):
    """JWT ids already used, kept until the token expires (replay protection)."""

    __tablename__ = "seen_tokens"

    jti_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    issuer: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
