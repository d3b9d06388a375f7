"""``--fhir`` against a controllable fake server: auth, a fresh export, failed write-backs.

The fake server (``tests.score.fake_fhir``) runs the real Bulk Data protocol and takes
transaction Bundles, so the whole ``run_score`` path is exercised, unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.score.conftest import bundles_to_ndjson
from tests.score.fake_fhir import fake_fhir_server
from training.score import keys
from training.score.job import EXPORT_DIR, EXPORT_DONE, ScoreOptions, run_score
from training.score.run_store import iter_ndjson

N_BUNDLES = 6  # Synthea bundles with scorable admissions (as in test_fhir_writeback)


@pytest.fixture(scope="module")
def server_export(synthea_bundles: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bundles_to_ndjson(synthea_bundles[:N_BUNDLES], tmp_path_factory.mktemp("served"))


def _opts(base: str, ckpt: Path, out: Path, **kw: Any) -> ScoreOptions:
    return ScoreOptions(
        source="fhir",
        location=base,
        out=out,
        checkpoint=ckpt,
        device="cpu",
        progress=False,
        database_url=f"sqlite:///{out.parent / (out.name + '-jobs.db')}",
        chunk_patients=2,
        **kw,
    )


def _job(opts: ScoreOptions) -> Any:
    from cds_hooks.db import Repository

    assert opts.database_url is not None
    return Repository.open(opts.database_url).job(opts.job_id)


def test_bearer_token_reaches_every_request(
    server_export: Path, tiny_ckpt: Path, tiny_scorer: Any, tmp_path: Path
) -> None:
    with fake_fhir_server(server_export) as server:
        opts = _opts(server.base, tiny_ckpt, tmp_path / "out", token="s3cret", write_back=True)
        result = run_score(opts, scorer=tiny_scorer)
    assert result.written_back > 0
    seen = {(method, path.rsplit("/", 1)[0]) for method, path, _ in server.requests}
    # kick-off, status, file downloads and transaction Bundles all carried the token
    assert {("GET", "/fhir"), ("GET", "/fhir/status"), ("GET", "/fhir/files")} <= seen
    assert ("POST", "/fhir") in seen
    assert {auth for _, _, auth in server.requests} == {"Bearer s3cret"}


def test_score_cli_reads_the_token_from_the_environment(
    server_export: Path, tiny_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from moe_health.cli import app

    monkeypatch.setenv("FHIR_TOKEN", "from-env")
    with fake_fhir_server(server_export) as server:
        args = ["score", "--fhir", server.base, "--out", str(tmp_path / "cli")]
        db = f"sqlite:///{tmp_path / 'jobs.db'}"
        extra = ["--checkpoint", str(tiny_ckpt), "--no-progress", "--database-url", db]
        result = CliRunner().invoke(app, [*args, *extra, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert server.requests and {a for _, _, a in server.requests} == {"Bearer from-env"}


def test_fresh_run_clears_an_old_export_and_resume_reuses_a_complete_one(
    server_export: Path, tiny_ckpt: Path, tiny_scorer: Any, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    stale = out / EXPORT_DIR
    stale.mkdir(parents=True)
    ghost = {"resourceType": "Patient", "id": "ghost-from-last-week"}
    (stale / "Patient.999.ndjson").write_bytes(orjson.dumps(ghost) + b"\n")
    (stale / EXPORT_DONE).write_text("an older job")
    with fake_fhir_server(server_export) as server:
        result = run_score(_opts(server.base, tiny_ckpt, out, record_job=False), tiny_scorer)
        assert server.kickoffs == 1
        assert not (stale / "Patient.999.ndjson").exists()
        assert result.counts.patients == N_BUNDLES
        errors = list(iter_ndjson(out / keys.ERRORS_FILE))
        assert all(e["patient_id"] != ghost["id"] for e in errors)
        again = _opts(server.base, tiny_ckpt, out, record_job=False, resume=True)
        run_score(again, tiny_scorer)
        assert server.kickoffs == 1  # the complete export was reused


def test_failed_write_back_is_retried_by_resume(
    server_export: Path, tiny_ckpt: Path, tiny_scorer: Any, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with fake_fhir_server(server_export) as server:
        server.reject_status = 403  # neither retried nor split: every Bundle fails
        opts = _opts(server.base, tiny_ckpt, out, write_back=True, write_back_batch=5)
        first = run_score(opts, scorer=tiny_scorer)
        n = first.counts.risk_assessments
        assert n > 0 and not server.stored
        assert first.outcome == "partial"
        assert first.counts.write_back_pending == n
        pending = [
            e for e in iter_ndjson(out / keys.ERRORS_FILE)
            if e["reason"] == keys.REASON_WRITE_BACK_FAILED
        ]  # fmt: skip
        assert len(pending) == n
        job = _job(opts)
        assert job.status == "partial" and job.details["outcome"] == "partial"
        assert job.details["write_back_pending"] == n

        server.reject_status = None  # the server is fixed; the operator resumes
        resumed = _opts(server.base, tiny_ckpt, out, write_back=True, resume=True)
        second = run_score(resumed, scorer=tiny_scorer)
    assert second.outcome == "succeeded"
    assert second.counts.write_back_pending == 0
    ras = {r["id"] for r in iter_ndjson(out / keys.RISK_NDJSON_FILE)}
    assert set(server.stored) == ras and len(ras) == n
    errors = list(iter_ndjson(out / keys.ERRORS_FILE))
    assert not [e for e in errors if e["reason"] == keys.REASON_WRITE_BACK_FAILED]
    assert second.counts.failures == len(errors)
    assert _job(resumed).status == "succeeded"
