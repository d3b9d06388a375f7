"""``run_score`` end to end on an export with the usual defects, and ``--resume``."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.score.conftest import bundles_to_ndjson
from training.score import keys
from training.score.job import ScoreOptions, run_score
from training.score.run_store import RunStore, iter_ndjson

LONELY_PATIENT = "lonely-patient-without-encounters"


@pytest.fixture(scope="module")
def defect_export(synthea_bundles: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight Synthea patients with a corrupt line, an unknown type, a gzip file and a
    patient who has no encounter."""
    out = bundles_to_ndjson(synthea_bundles[:8], tmp_path_factory.mktemp("defects"))
    obs = out / "Observation.ndjson"
    lines = obs.read_bytes() + b'{"resourceType": "Observation", "id": "cut-sho\n'
    (out / "Observation.ndjson.gz").write_bytes(gzip.compress(lines))
    obs.unlink()
    patients = out / "Patient.ndjson"
    lonely = {"resourceType": "Patient", "id": LONELY_PATIENT, "gender": "female"}
    odd = {"resourceType": "SpaceshipLog", "id": "x1", "subject": {"reference": "Patient/a"}}
    patients.write_bytes(patients.read_bytes() + orjson.dumps(lonely) + b"\n")
    (out / "SpaceshipLog.ndjson").write_bytes(orjson.dumps(odd) + b"\n")
    return out


def _opts(export: Path, ckpt: Path, out: Path, **kw: Any) -> ScoreOptions:
    return ScoreOptions(
        source="ndjson",
        location=str(export),
        out=out,
        checkpoint=ckpt,
        device="cpu",
        progress=False,
        database_url=f"sqlite:///{out.parent / (out.name + '-jobs.db')}",
        chunk_patients=3,
        **kw,
    )


def _errors(out: Path) -> list[dict[str, Any]]:
    return list(iter_ndjson(out / keys.ERRORS_FILE))


def test_defective_export_is_scored_and_every_defect_reported(
    defect_export: Path, tiny_ckpt: Path, tiny_scorer: Any, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = run_score(scorer=tiny_scorer, opts=_opts(defect_export, tiny_ckpt, out))
    errors = _errors(out)
    reasons = Counter(e["reason"] for e in errors)
    corrupt = [e for e in errors if e["reason"] == keys.REASON_BAD_RESOURCE]
    n_lines = len(
        gzip.decompress((defect_export / "Observation.ndjson.gz").read_bytes()).splitlines()
    )
    assert [e["source"] for e in corrupt] == [f"Observation.ndjson.gz:{n_lines}"]
    unknown = [e for e in errors if e["reason"] == keys.REASON_UNKNOWN_TYPE]
    assert unknown and unknown[0]["source"] == "SpaceshipLog.ndjson:1"
    lonely = [e for e in errors if e["patient_id"] == LONELY_PATIENT]
    assert [e["reason"] for e in lonely] == [keys.REASON_NO_ENCOUNTER]
    counts = result.counts
    assert counts.patients == 9  # 8 Synthea + the lonely one
    assert counts.bad_resources == 2
    assert counts.failures == len(errors) == sum(reasons.values())
    assert counts.risk_assessments == 3 * counts.encounters_scored > 0
    assert len(list(iter_ndjson(out / keys.RISK_NDJSON_FILE))) == counts.risk_assessments


def test_run_is_recorded_in_the_database(
    defect_export: Path, tiny_ckpt: Path, tiny_scorer: Any, tmp_path: Path
) -> None:
    from cds_hooks.db import Repository

    opts = _opts(defect_export, tiny_ckpt, tmp_path / "run")
    result = run_score(opts)
    assert opts.database_url is not None
    job = Repository.open(opts.database_url).job(opts.job_id)
    assert job is not None
    assert job.status == "succeeded"
    assert job.model_version == result.model_version == "tiny-0"
    assert job.n_records == result.counts.encounters_scored
    assert job.n_abstained == result.counts.abstained > 0
    assert job.details["counts"]["failures"] == result.counts.failures > 0
    assert job.finished_at is not None


def test_risk_assessments_are_valid_fhir_r4b(
    defect_export: Path, tiny_ckpt: Path, tiny_scorer: Any, tmp_path: Path
) -> None:
    from fhir.resources.R4B.riskassessment import RiskAssessment

    out = tmp_path / "run"
    run_score(scorer=tiny_scorer, opts=_opts(defect_export, tiny_ckpt, out, record_job=False))
    ras = list(iter_ndjson(out / keys.RISK_NDJSON_FILE))
    assert ras
    for ra in ras:
        parsed = RiskAssessment.model_validate(ra)
        assert parsed.subject.reference.startswith("Patient/")
        assert parsed.encounter is not None and parsed.occurrenceDateTime is not None
        assert len(parsed.prediction) == 1
        assert 0.0 <= float(parsed.prediction[0].probabilityDecimal) <= 1.0
        assert parsed.method is not None and parsed.method.coding[0].version == "tiny-0"
        assert parsed.basis  # the modalities used
    assert len({ra["id"] for ra in ras}) == len(ras)


class _InterruptError(Exception):
    pass


def test_resume_after_interruption_scores_no_one_twice(
    defect_export: Path,
    tiny_ckpt: Path,
    tiny_scorer: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    full = tmp_path / "full"
    whole = run_score(
        scorer=tiny_scorer, opts=_opts(defect_export, tiny_ckpt, full, record_job=False)
    )

    out = tmp_path / "interrupted"
    real_commit = RunStore.commit
    calls = {"n": 0}

    def crash_on_second_commit(self: RunStore, chunk: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise _InterruptError("killed")
        real_commit(self, chunk)

    monkeypatch.setattr(RunStore, "commit", crash_on_second_commit)
    with pytest.raises(_InterruptError):
        run_score(scorer=tiny_scorer, opts=_opts(defect_export, tiny_ckpt, out, record_job=False))
    monkeypatch.setattr(RunStore, "commit", real_commit)
    first = RunStore(out, resume=True).completed
    assert 0 < len(first) < 9

    resumed = run_score(
        scorer=tiny_scorer, opts=_opts(defect_export, tiny_ckpt, out, record_job=False, resume=True)
    )
    ledger = [orjson.loads(line) for line in (out / keys.LEDGER_FILE).read_bytes().splitlines()]
    committed = [pid for entry in ledger if "part" in entry for pid in entry["patients"]]
    assert len(committed) == len(set(committed)) == 9  # every patient exactly once
    assert _by_id(out) == _by_id(full)
    assert sorted(map(_key, _errors(out))) == sorted(map(_key, _errors(full)))
    # the bad lines were read twice (once per run) but are counted once
    assert resumed.counts.bad_resources == whole.counts.bad_resources == 2
    assert resumed.counts.to_dict() == whole.counts.to_dict()
    assert (out / keys.SUMMARY_FILE).read_bytes() == (full / keys.SUMMARY_FILE).read_bytes()


def test_resume_with_another_model_is_refused(
    defect_export: Path, tiny_ckpt: Path, tiny_scorer: Any, tmp_path: Path
) -> None:
    from tests.score.tiny_model import tiny_checkpoint
    from training.score.run_store import ResumeMismatchError
    from training.score.scorer import ScorerFactory

    out = tmp_path / "run"
    run_score(scorer=tiny_scorer, opts=_opts(defect_export, tiny_ckpt, out, record_job=False))
    other_ckpt = tiny_checkpoint(tmp_path / "other", seed=1)
    other = ScorerFactory(other_ckpt, None, device="cpu")()
    before = (out / keys.LEDGER_FILE).read_bytes()
    opts = _opts(defect_export, other_ckpt, out, record_job=False, resume=True)
    with pytest.raises(ResumeMismatchError, match="tiny-0"):
        run_score(opts, scorer=other)
    assert (out / keys.LEDGER_FILE).read_bytes() == before  # nothing touched


def test_failed_run_records_its_counts_and_abstentions(
    defect_export: Path,
    tiny_ckpt: Path,
    tiny_scorer: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cds_hooks.db import Repository

    real_commit = RunStore.commit
    calls = {"n": 0}

    def crash_on_third_commit(self: RunStore, chunk: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise _InterruptError("killed")
        real_commit(self, chunk)

    monkeypatch.setattr(RunStore, "commit", crash_on_third_commit)
    opts = _opts(defect_export, tiny_ckpt, tmp_path / "run")
    with pytest.raises(_InterruptError):
        run_score(opts, scorer=tiny_scorer)
    monkeypatch.setattr(RunStore, "commit", real_commit)
    done = RunStore(tmp_path / "run", resume=True).counts
    assert opts.database_url is not None
    job = Repository.open(opts.database_url).job(opts.job_id)
    assert job is not None and job.status == "failed"
    assert job.n_records == done.encounters_scored
    assert job.n_abstained == done.abstained > 0
    assert "_InterruptError" in job.details["error"]


class _NanForOneEncounter:
    """The real scorer, except that one admission's probabilities come out NaN."""

    def __init__(self, inner: Any, encounter_id: str) -> None:
        self._inner = inner
        self._bad = encounter_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def score(self, rows: Any) -> Any:
        scored = self._inner.score(rows)
        for row in scored:
            if row.encounter_id == self._bad:
                row.risks = {k: float("nan") for k in row.risks}
        return scored


def test_a_nan_probability_is_reported_and_the_run_goes_on(
    defect_export: Path, tiny_ckpt: Path, tiny_scorer: Any, tmp_path: Path
) -> None:
    good = run_score(
        _opts(defect_export, tiny_ckpt, tmp_path / "good", record_job=False), tiny_scorer
    )
    ras = list(iter_ndjson(tmp_path / "good" / keys.RISK_NDJSON_FILE))
    bad = ras[0]["encounter"]["reference"].rsplit("/", 1)[-1]
    out = tmp_path / "nan"
    nan = run_score(
        _opts(defect_export, tiny_ckpt, out, record_job=False),
        _NanForOneEncounter(tiny_scorer, bad),
    )
    failed = [e for e in _errors(out) if e["reason"] == keys.REASON_SCORING_FAILED]
    assert [e["source"] for e in failed] == [f"Encounter/{bad}"]
    assert "probability" in failed[0]["detail"]
    assert nan.counts.encounters_scored == good.counts.encounters_scored - 1
    assert nan.counts.risk_assessments == good.counts.risk_assessments - 3
    left = list(iter_ndjson(out / keys.RISK_NDJSON_FILE))
    assert all(r["encounter"]["reference"] != f"Encounter/{bad}" for r in left)
    import pyarrow.parquet as pq

    table = pq.read_table(out / keys.TABLE_PARQUET_FILE).to_pylist()
    assert all(r[keys.COL_ENCOUNTER_ID] != bad for r in table)


def test_second_run_with_the_same_cache_encodes_nothing(
    shared_data: Path, tiny_ckpt: Path, tmp_path: Path
) -> None:
    from training.score.scorer import ScorerFactory

    export = shared_data / "synthea-bulk-10"  # admissions with clinical notes

    scorer = ScorerFactory(tiny_ckpt, tmp_path / "cache.sqlite", device="cpu")()
    encoded: list[int] = []
    for name in ("_encode_texts", "_encode_images"):
        real = getattr(scorer, name)

        def counting(items: list[object], real: Any = real) -> Any:
            encoded.append(len(items))
            return real(items)

        setattr(scorer, name, counting)
    first = run_score(_opts(export, tiny_ckpt, tmp_path / "one", record_job=False), scorer)
    n_first = sum(encoded)
    assert n_first > 0 and scorer.store.stats.misses > 0  # notes/images were encoded
    hits, misses = scorer.store.stats.hits, scorer.store.stats.misses
    second = run_score(_opts(export, tiny_ckpt, tmp_path / "two", record_job=False), scorer)
    assert sum(encoded) == n_first  # not one encoder call more
    assert scorer.store.stats.misses == misses
    assert scorer.store.stats.hits > hits
    assert _by_id(tmp_path / "two") == _by_id(tmp_path / "one")
    assert second.counts.to_dict() == first.counts.to_dict()


def _by_id(out: Path) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in iter_ndjson(out / keys.RISK_NDJSON_FILE)}


def _key(error: dict[str, Any]) -> tuple[str, str, str]:
    return (error["reason"], str(error["patient_id"]), str(error["source"]))


def test_score_command_runs_and_rejects_two_sources(
    defect_export: Path, tiny_ckpt: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from moe_health.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    args = ["score", "--ndjson", str(defect_export), "--out", str(out)]
    result = runner.invoke(
        app,
        [*args, "--checkpoint", str(tiny_ckpt), "--no-progress", "--database-url", db],
    )
    assert result.exit_code == 0, result.output
    assert "9 patients" in result.output
    assert (out / keys.RISK_NDJSON_FILE).stat().st_size > 0
    both = runner.invoke(app, [*args, "--fhir", "http://127.0.0.1:9/fhir"])
    assert both.exit_code == 2
    assert "exactly one of" in both.output


def test_worker_processes_give_the_same_outputs(
    defect_export: Path, tiny_ckpt: Path, tiny_scorer: Any, tmp_path: Path
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    run_score(scorer=tiny_scorer, opts=_opts(defect_export, tiny_ckpt, one, record_job=False))
    run_score(
        scorer=tiny_scorer,
        opts=_opts(defect_export, tiny_ckpt, two, record_job=False, workers=2),
    )
    for name in (keys.RISK_NDJSON_FILE, keys.ERRORS_FILE, keys.TABLE_CSV_FILE, keys.SUMMARY_FILE):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
