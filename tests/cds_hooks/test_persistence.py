"""Persistence: migrations, audit log across restarts, feedback, jobs, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect

from cds_hooks.config import Settings, default_model_path
from cds_hooks.db import Repository
from cds_hooks.main import create_app
from cds_hooks.model_service import ModelService
from tests.cds_hooks.conftest import audit_rows, hook_body
from tests.servers import start_postgres

TABLES = {"model_versions", "predictions", "feedback", "batch_jobs", "seen_tokens"}


def _exercise(url: str) -> None:
    repo = Repository.open(url)
    assert set(inspect(repo.db.engine).get_table_names()) >= TABLES
    mid = repo.register_model(
        name="m", version="1", spec_version="s1", checksum="abc", path="/x", metrics={"auroc": 0.8}
    )
    assert (
        repo.register_model(name="m", version="1", spec_version="s1", checksum="abc", path="/x")
        == mid
    )
    repo.record_prediction(
        hook_instance="h-1",
        service_id="patient-view",
        patient_key="k" * 32,
        model_version="1",
        model_version_id=mid,
        risks={"mortality": 0.2},
        modalities={"used": ["EHR"]},
        card_uuids=["c1"],
        abstain_reason=None,
        latency_ms=12.5,
    )
    ts = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    repo.record_feedback(
        service_id="patient-view",
        card_uuid="c1",
        outcome="overridden",
        outcome_timestamp=ts,
        override_reason={"userComment": "known"},
    )
    repo.record_job("job-1", status="running", source="/export", model_version="1")
    repo.record_job("job-1", status="succeeded", n_records=10, n_abstained=1)
    repo.db.dispose()

    reopened = Repository.open(url)  # a restart: schema kept, rows kept
    rows = reopened.predictions(hook_instance="h-1")
    assert len(rows) == 1 and rows[0].risks == {"mortality": 0.2} and rows[0].latency_ms == 12.5
    fb = reopened.feedback(service_id="patient-view", card_uuid="c1")
    assert fb[0].outcome == "overridden" and fb[0].override_reason == {"userComment": "known"}
    assert fb[0].outcome_timestamp.replace(tzinfo=UTC) == ts
    job = reopened.job("job-1")
    assert job is not None and job.status == "succeeded" and job.n_records == 10
    assert job.finished_at is not None
    exp = datetime.now(UTC) + timedelta(minutes=5)
    assert reopened.remember_jti("iss", "jti-1", exp) is True
    assert reopened.remember_jti("iss", "jti-1", exp) is False
    reopened.db.dispose()


def test_sqlite_schema_and_restart(tmp_path: Path) -> None:
    _exercise(f"sqlite:///{tmp_path / 'a' / 'cds.db'}")


def test_unknown_job_status_is_refused(tmp_path: Path) -> None:
    repo = Repository.open(f"sqlite:///{tmp_path / 'j.db'}")
    with pytest.raises(ValueError, match="job status"):
        repo.record_job("j", status="done")


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    server = start_postgres(tmp_path)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.mark.integration
def test_postgresql_schema_and_restart(postgres_url: str) -> None:
    _exercise(postgres_url)


@pytest.mark.integration
def test_app_on_postgresql_via_database_url_serves_and_keeps_its_audit_log(
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    demo_model: ModelService,
    demo_patients: list[dict[str, Any]],
) -> None:
    """The service configured only through DATABASE_URL answers a hook call on PostgreSQL,
    and the call's audit row is still there after the app restarts."""
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    monkeypatch.delenv("MOE_HEALTH_DATABASE_URL", raising=False)
    settings = Settings(
        model_path=default_model_path(),
        data_dir=tmp_path / "data",
        auth_disabled=True,
        torch_threads=0,
    )
    assert settings.resolved_database_url == postgres_url
    patient = next(p for p in demo_patients if p["pattern"] == "E+T")
    body = hook_body(patient, hookInstance="pg-restart-check")
    with TestClient(create_app(settings, demo_model)) as client:
        assert client.get("/readyz").json()["database"] == "ok"
        resp = client.post("/cds-services/patient-view", json=body)
        assert resp.status_code == 200, resp.text
        card_uuids = [c["uuid"] for c in resp.json()["cards"]]
        assert len(card_uuids) == 3
        assert audit_rows(client, "pg-restart-check")[0].card_uuids == card_uuids
    with TestClient(create_app(settings, demo_model)) as client:  # a restart
        app: Any = client.app
        assert app.state.cds.repository.db.engine.dialect.name == "postgresql"
        rows = audit_rows(client, "pg-restart-check")
        assert len(rows) == 1 and rows[0].card_uuids == card_uuids
        assert set(rows[0].risks) == {"mortality", "long_los", "readmission"}
        assert len(app.state.cds.repository.models()) == 1  # registered once, not per start
