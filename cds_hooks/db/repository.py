"""Reads and writes, one method per use; callers never touch sessions or SQL.

Batch scoring records its runs with::

    from cds_hooks.db import Repository
    repo = Repository.open()          # default URL from settings, migrated
    repo.record_job("job-1", status="running", source="/data/export", model_version="1.0")
    ...
    repo.record_job("job-1", status="succeeded", n_records=900, n_abstained=3)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cds_hooks.db.models import BatchJob, Feedback, ModelVersion, Prediction, SeenToken
from cds_hooks.db.session import Database

__all__ = ["FeedbackRow", "JobStatus", "Repository"]

JobStatus = str  # "running" | "succeeded" | "partial" | "failed"
# "partial": the run finished but part of its output still needs action (for batch
# scoring: RiskAssessments not yet written back; ``--resume`` sends them)
_JOB_STATUSES = ("running", "succeeded", "partial", "failed")


@dataclass(frozen=True, slots=True)
class FeedbackRow:
    """One stored feedback report, as the API returns it."""

    service_id: str
    card_uuid: str
    outcome: str
    accepted_suggestions: list[Any]
    override_reason: dict[str, Any] | None
    outcome_timestamp: datetime
    received_at: datetime


class Repository:
    """The service's persistence API over one ``Database``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    def open(cls, url: str | None = None) -> Repository:
        """A migrated repository at ``url`` (default: the configured database)."""
        if url is None:
            from cds_hooks.config import get_settings

            url = get_settings().resolved_database_url
        db = Database(url)
        db.migrate()
        return cls(db)

    # --- model registry --------------------------------------------------------------
    def register_model(
        self,
        *,
        name: str,
        version: str,
        spec_version: str,
        checksum: str,
        path: str,
        metrics: Mapping[str, Any] | None = None,
    ) -> int:
        """Id of the registry row for this checkpoint, inserting it the first time.

        Idempotent across processes: workers starting together may both miss the row and
        both insert; the loser's insert violates the (name, version, checksum) unique
        constraint and it then reads the winner's row.
        """
        try:
            with self.db.session() as s:
                found = self._model_id(s, name, version, checksum)
                if found is not None:
                    return found
                row = ModelVersion(
                    name=name,
                    version=version,
                    spec_version=spec_version,
                    checksum=checksum,
                    path=path,
                    metrics=dict(metrics or {}),
                )
                s.add(row)
                s.flush()
                return int(row.id)
        except IntegrityError:
            with self.db.session() as s:
                found = self._model_id(s, name, version, checksum)
            if found is None:  # the conflict was not the concurrent insert: a real error
                raise
            return found

    @staticmethod
    def _model_id(s: Session, name: str, version: str, checksum: str) -> int | None:
        row_id = s.scalar(
            select(ModelVersion.id).where(
                ModelVersion.name == name,
                ModelVersion.version == version,
                ModelVersion.checksum == checksum,
            )
        )
        return None if row_id is None else int(row_id)

    def models(self) -> list[ModelVersion]:
        with self.db.session() as s:
            return list(s.scalars(select(ModelVersion).order_by(ModelVersion.id)))

    # --- audit log -------------------------------------------------------------------
    def record_prediction(
        self,
        *,
        hook_instance: str,
        service_id: str,
        patient_key: str,
        model_version: str,
        model_version_id: int | None,
        risks: Mapping[str, float],
        modalities: Mapping[str, Any],
        card_uuids: Sequence[str],
        abstain_reason: str | None,
        latency_ms: float,
    ) -> int:
        """Append one audit row; returns its id."""
        with self.db.session() as s:
            row = Prediction(
                hook_instance=hook_instance,
                service_id=service_id,
                patient_key=patient_key,
                model_version=model_version,
                model_version_id=model_version_id,
                risks=dict(risks),
                modalities=dict(modalities),
                card_uuids=list(card_uuids),
                abstain_reason=abstain_reason,
                latency_ms=float(latency_ms),
            )
            s.add(row)
            s.flush()
            return int(row.id)

    def predictions(
        self, *, hook_instance: str | None = None, limit: int = 100
    ) -> list[Prediction]:
        """Newest audit rows first, optionally for one hook instance."""
        with self.db.session() as s:
            q = select(Prediction).order_by(Prediction.id.desc()).limit(limit)
            if hook_instance is not None:
                q = q.where(Prediction.hook_instance == hook_instance)
            return list(s.scalars(q))

    # --- feedback --------------------------------------------------------------------
    def record_feedback(
        self,
        *,
        service_id: str,
        card_uuid: str,
        outcome: str,
        outcome_timestamp: datetime,
        accepted_suggestions: Sequence[Mapping[str, Any]] = (),
        override_reason: Mapping[str, Any] | None = None,
    ) -> None:
        with self.db.session() as s:
            s.add(
                Feedback(
                    service_id=service_id,
                    card_uuid=card_uuid,
                    outcome=outcome,
                    accepted_suggestions=[dict(a) for a in accepted_suggestions],
                    override_reason=dict(override_reason) if override_reason else None,
                    outcome_timestamp=outcome_timestamp,
                )
            )

    def feedback(self, *, service_id: str, card_uuid: str | None = None) -> list[FeedbackRow]:
        """Stored feedback for a service (and one card), oldest first."""
        with self.db.session() as s:
            q = select(Feedback).where(Feedback.service_id == service_id).order_by(Feedback.id)
            if card_uuid is not None:
                q = q.where(Feedback.card_uuid == card_uuid)
            return [
                FeedbackRow(
                    service_id=r.service_id,
                    card_uuid=r.card_uuid,
                    outcome=r.outcome,
                    accepted_suggestions=list(r.accepted_suggestions),
                    override_reason=r.override_reason,
                    outcome_timestamp=r.outcome_timestamp,
                    received_at=r.received_at,
                )
                for r in s.scalars(q)
            ]

    # --- batch jobs ------------------------------------------------------------------
    def record_job(
        self,
        job_id: str,
        *,
        status: JobStatus,
        source: str | None = None,
        model_version: str | None = None,
        engine: str | None = None,
        n_records: int | None = None,
        n_abstained: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Create or update the batch job ``job_id``; a final status stamps ``finished_at``."""
        if status not in _JOB_STATUSES:
            raise ValueError(f"job status must be one of {_JOB_STATUSES}, got {status!r}")
        with self.db.session() as s:
            job = s.scalar(select(BatchJob).where(BatchJob.job_id == job_id))
            if job is None:
                job = BatchJob(
                    job_id=job_id,
                    status=status,
                    source=source or "",
                    model_version=model_version or "",
                    engine=engine or "local",
                    n_records=n_records or 0,
                    n_abstained=n_abstained or 0,
                    details=dict(details or {}),
                )
                s.add(job)
            else:
                job.status = status
                if source is not None:
                    job.source = source
                if model_version is not None:
                    job.model_version = model_version
                if engine is not None:
                    job.engine = engine
                if n_records is not None:
                    job.n_records = n_records
                if n_abstained is not None:
                    job.n_abstained = n_abstained
                if details is not None:
                    job.details = {**job.details, **details}
            if status != "running":
                job.finished_at = datetime.now(UTC)

    def job(self, job_id: str) -> BatchJob | None:
        with self.db.session() as s:
            return s.scalar(select(BatchJob).where(BatchJob.job_id == job_id))

    # --- JWT replay protection -------------------------------------------------------
    def remember_jti(self, issuer: str, jti: str, expires_at: datetime) -> bool:
        """Record a token id; ``False`` when it was already seen (a replay)."""
        key = hashlib.sha256(f"{issuer}\x00{jti}".encode()).hexdigest()
        now = datetime.now(UTC)
        try:
            with self.db.session() as s:
                s.execute(delete(SeenToken).where(SeenToken.expires_at < now))
                s.add(SeenToken(jti_hash=key, issuer=issuer, expires_at=expires_at))
        except IntegrityError:
            return False
        return True
