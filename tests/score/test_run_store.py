"""The run store: committed parts, the ledger as commit point, resume, final files."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from training.score import keys
from training.score.run_store import (
    Chunk,
    ResumeMismatchError,
    RunInfo,
    RunStore,
    WriteFailure,
    iter_ndjson,
)


def _chunk(pids: list[str], sources: list[str] | None = None) -> Chunk:
    chunk = Chunk(patient_ids=list(pids))
    for pid in pids:
        chunk.risk_assessments.append({"resourceType": "RiskAssessment", "id": pid})
        chunk.rows.append(
            {keys.COL_PATIENT_ID: pid, keys.COL_TASK: "mortality", keys.COL_RISK: 0.5}
        )
    for src in sources or []:
        chunk.errors.append({"reason": keys.REASON_BAD_RESOURCE, "source": src})
    chunk.counts.patients = len(pids)
    return chunk


def test_finalize_concatenates_committed_parts(tmp_path: Path) -> None:
    store = RunStore(tmp_path, resume=False)
    store.commit(_chunk(["a", "b"]))
    store.commit(_chunk(["c"], ["x.ndjson:3"]))
    counts = store.finalize()
    assert counts.patients == 3
    ras = list(iter_ndjson(tmp_path / keys.RISK_NDJSON_FILE))
    assert [r["id"] for r in ras] == ["a", "b", "c"]
    table = pq.read_table(tmp_path / keys.TABLE_PARQUET_FILE)
    assert table.column(keys.COL_PATIENT_ID).to_pylist() == ["a", "b", "c"]
    assert (tmp_path / keys.TABLE_CSV_FILE).read_text().count("\n") == 4  # header + 3
    errors = list(iter_ndjson(tmp_path / keys.ERRORS_FILE))
    assert errors == [{"reason": keys.REASON_BAD_RESOURCE, "source": "x.ndjson:3"}]


def test_resume_skips_committed_patients_and_drops_uncommitted_parts(tmp_path: Path) -> None:
    store = RunStore(tmp_path, resume=False)
    store.commit(_chunk(["a", "b"], ["x.ndjson:3"]))
    # a crash after writing a part but before its ledger line
    (tmp_path / keys.PARTS_DIR / "000001.ra.ndjson").write_bytes(b'{"id":"zombie"}\n')
    with open(tmp_path / keys.LEDGER_FILE, "ab") as fh:
        fh.write(b'{"part": 1, "patients": ["zom')  # a ledger line cut short
    resumed = RunStore(tmp_path, resume=True)
    assert resumed.completed == {"a", "b"}
    assert not (tmp_path / keys.PARTS_DIR / "000001.ra.ndjson").exists()
    resumed.commit(_chunk(["c"], ["x.ndjson:3", "y.ndjson:1"]))  # x:3 already reported
    resumed.finalize()
    ids = [r["id"] for r in iter_ndjson(tmp_path / keys.RISK_NDJSON_FILE)]
    assert ids == ["a", "b", "c"]
    sources = [e["source"] for e in iter_ndjson(tmp_path / keys.ERRORS_FILE)]
    assert sources == ["x.ndjson:3", "y.ndjson:1"]
    assert resumed.counts.patients == 3


def test_fresh_run_clears_a_previous_ledger(tmp_path: Path) -> None:
    RunStore(tmp_path, resume=False).commit(_chunk(["a"]))
    assert RunStore(tmp_path, resume=False).completed == set()


def test_stray_files_in_parts_are_ignored(tmp_path: Path) -> None:
    store = RunStore(tmp_path, resume=False)
    store.commit(_chunk(["a"]))
    stray = tmp_path / keys.PARTS_DIR / "notes.ra.ndjson"
    stray.write_bytes(b'{"id": "not-a-part"}\n')
    (tmp_path / keys.PARTS_DIR / ".DS_Store").write_bytes(b"\0")
    resumed = RunStore(tmp_path, resume=True)
    resumed.finalize()
    assert [r["id"] for r in iter_ndjson(tmp_path / keys.RISK_NDJSON_FILE)] == ["a"]
    assert stray.exists()  # not ours to delete
    RunStore(tmp_path, resume=False)  # a fresh run clears its own parts only
    assert stray.exists()


def test_resume_refuses_another_model_or_source(tmp_path: Path) -> None:
    store = RunStore(tmp_path, resume=False, run=RunInfo("v1", "ndjson:/exports/a"))
    store.commit(_chunk(["a"]))
    with pytest.raises(ResumeMismatchError, match=r"model version 'v1'.*'v2'"):
        RunStore(tmp_path, resume=True, run=RunInfo("v2", "ndjson:/exports/a"))
    with pytest.raises(ResumeMismatchError, match="source"):
        RunStore(tmp_path, resume=True, run=RunInfo("v1", "ndjson:/exports/b"))
    same = RunStore(tmp_path, resume=True, run=RunInfo("v1", "ndjson:/exports/a"))
    assert same.completed == {"a"}


def test_resumed_bad_lines_are_not_counted_twice(tmp_path: Path) -> None:
    def chunk(pids: list[str]) -> Chunk:
        c = _chunk(pids, ["x.ndjson:3"])  # a resumed run reads the export again
        c.counts.bad_resources = 1
        return c

    RunStore(tmp_path, resume=False).commit(chunk(["a"]))
    resumed = RunStore(tmp_path, resume=True)
    resumed.commit(chunk(["b"]))
    counts = resumed.finalize()
    assert counts.bad_resources == 1
    assert counts.failures == 1


def test_failed_write_backs_stay_pending_until_retried(tmp_path: Path) -> None:
    store = RunStore(tmp_path, resume=False)
    chunk = _chunk(["a", "b"])
    chunk.write_back_failed = [WriteFailure("a", "a", "HTTP 503"), WriteFailure("b", "b", "x")]
    store.commit(chunk)
    counts = store.finalize()
    assert counts.write_back_pending == 2 and counts.failures == 2
    errors = list(iter_ndjson(tmp_path / keys.ERRORS_FILE))
    assert [e["source"] for e in errors] == ["RiskAssessment/a", "RiskAssessment/b"]

    resumed = RunStore(tmp_path, resume=True)
    assert [r["id"] for r in resumed.pending_risk_assessments()] == ["a", "b"]
    resumed.record_write_back(["a"], [WriteFailure("b", "b", "HTTP 422")])
    again = RunStore(tmp_path, resume=True)
    assert [r["id"] for r in again.pending_risk_assessments()] == ["b"]
    counts = again.finalize()
    assert counts.write_back_pending == 1
    errors = list(iter_ndjson(tmp_path / keys.ERRORS_FILE))
    assert [(e["source"], e["detail"]) for e in errors] == [("RiskAssessment/b", "HTTP 422")]
