"""Fixtures: settings on a temp database, the app (with its lifespan), demo patients, keys."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cds_hooks.config import Settings, default_model_path
from cds_hooks.main import create_app
from cds_hooks.model_service import ModelService
from tests.cds_hooks.jwt_keys import ISSUER, SigningKeys, make_keys

DEMO_PATIENTS = Path(__file__).resolve().parents[2] / "cds_hooks" / "demo" / "patients.json"


def make_settings(tmp_path: Path, **over: Any) -> Settings:
    base: dict[str, Any] = dict(
        model_path=default_model_path(),
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'cds.db'}",
        auth_disabled=True,
        log_json=True,
        torch_threads=0,  # leave the test process's torch settings alone
    )
    base.update(over)
    return Settings(**base)


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> ModelService:
    """The shipped demo model, loaded once for the whole session."""
    return ModelService.load(make_settings(tmp_path_factory.mktemp("model")))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def client(settings: Settings, demo_model: ModelService) -> Iterator[TestClient]:
    with TestClient(create_app(settings, demo_model), base_url="http://127.0.0.1:8080") as c:
        yield c


@pytest.fixture(scope="session")
def demo_patients() -> list[dict[str, Any]]:
    patients: list[dict[str, Any]] = json.loads(DEMO_PATIENTS.read_text())
    return patients


def audit_rows(client: TestClient, hook_instance: str | None = None) -> list[Any]:
    """Audit-log rows the app behind ``client`` wrote (newest first)."""
    app: Any = client.app
    rows: list[Any] = app.state.cds.repository.predictions(hook_instance=hook_instance)
    return rows


def hook_body(patient: dict[str, Any], hook: str = "patient-view", **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hook": hook,
        "hookInstance": f"hi-{patient['id']}-{hook}",
        "context": {
            "userId": "Practitioner/demo",
            "patientId": patient["patientId"],
            "encounterId": patient["encounterId"],
        },
        "prefetch": copy.deepcopy(patient["prefetch"]),  # tests may mutate it
    }
    body.update(over)
    return body


@pytest.fixture
def keys(tmp_path: Path) -> SigningKeys:
    return make_keys(tmp_path)


@pytest.fixture
def auth_client(tmp_path: Path, keys: SigningKeys) -> Iterator[TestClient]:
    s = make_settings(tmp_path, auth_disabled=False, trusted_issuers={ISSUER: str(keys.jwks_path)})
    with TestClient(create_app(s), base_url="http://127.0.0.1:8080") as c:
        yield c
