"""Initial schema: model registry, prediction audit log, feedback, batch jobs, seen JWT ids.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(100), nullable=False),
        sa.Column("spec_version", sa.String(100), nullable=False),
        sa.Column("checksum", sa.String(128), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("registered_at", _TS, nullable=False),
        sa.UniqueConstraint("name", "version", "checksum"),
    )
    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("hook_instance", sa.String(200), nullable=False, index=True),
        sa.Column("service_id", sa.String(100), nullable=False),
        sa.Column("patient_key", sa.String(64), nullable=False, index=True),
        sa.Column(
            "model_version_id", sa.Integer(), sa.ForeignKey("model_versions.id"), nullable=True
        ),
        sa.Column("model_version", sa.String(100), nullable=False),
        sa.Column("risks", sa.JSON(), nullable=False),
        sa.Column("modalities", sa.JSON(), nullable=False),
        sa.Column("card_uuids", sa.JSON(), nullable=False),
        sa.Column("abstain_reason", sa.Text(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("service_id", sa.String(100), nullable=False),
        sa.Column("card_uuid", sa.String(100), nullable=False, index=True),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("accepted_suggestions", sa.JSON(), nullable=False),
        sa.Column("override_reason", sa.JSON(), nullable=True),
        sa.Column("outcome_timestamp", _TS, nullable=False),
        sa.Column("received_at", _TS, nullable=False),
    )
    op.create_table(
        "batch_jobs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("job_id", sa.String(100), nullable=False, unique=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("model_version", sa.String(100), nullable=False),
        sa.Column("engine", sa.String(20), nullable=False),
        sa.Column("n_records", sa.Integer(), nullable=False),
        sa.Column("n_abstained", sa.Integer(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("finished_at", _TS, nullable=True),
    )
    op.create_table(
        "seen_tokens",
        sa.Column("jti_hash", sa.String(64), primary_key=True),
        sa.Column("issuer", sa.Text(), nullable=False),
        sa.Column("expires_at", _TS, nullable=False, index=True),
    )


def downgrade() -> None:
    for table in ("seen_tokens", "batch_jobs", "feedback", "predictions", "model_versions"):
        op.drop_table(table)
