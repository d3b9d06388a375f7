"""The run store: committed parts, the ledger as commit point, resume, final files."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from training.score import keys
from training.score.run_store import Chunk, RunStore, iter_ndjson


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
