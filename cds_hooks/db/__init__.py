"""Persistence: SQLAlchemy 2 models, Alembic migrations (applied at startup), repository.

SQLite file by default; PostgreSQL (or any SQLAlchemy URL) through ``DATABASE_URL``.
"""

from cds_hooks.db.models import Base, BatchJob, Feedback, ModelVersion, Prediction, SeenToken
from cds_hooks.db.repository import Repository
from cds_hooks.db.session import Database, upgrade_to_head

__all__ = [
    "Base",
    "BatchJob",
    "Database",
    "Feedback",
    "ModelVersion",
    "Prediction",
    "Repository",
    "SeenToken",
    "upgrade_to_head",
]
