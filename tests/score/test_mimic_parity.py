"""MIMIC-IV demo scored with ``--mimic-dir`` and via ``export-fhir`` + ``--ndjson``: the same
risks for every cohort admission."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from training.score import keys
from training.score.job import ScoreOptions, run_score


def _risks(out: Path) -> dict[tuple[str, str, str], Any]:
    rows = pq.read_table(out / keys.TABLE_PARQUET_FILE).to_pylist()
    return {
        (r[keys.COL_PATIENT_ID], r[keys.COL_ENCOUNTER_ID], r[keys.COL_TASK]): (
            r[keys.COL_RISK],
            r[keys.COL_MODALITIES_USED],
        )
        for r in rows
    }


@pytest.mark.slow
def test_mimic_direct_and_via_fhir_export_give_the_same_risks(
    shared_data: Path, tiny_ckpt: Path, tiny_scorer: Any, tmp_path: Path
) -> None:
    from fhir_adapters.mimic_export import MimicExportConfig, export_mimic_fhir

    demo = shared_data / "mimic-iv-demo-2.2"
    common = {"checkpoint": tiny_ckpt, "record_job": False, "progress": False, "device": "cpu"}
    direct = tmp_path / "direct"
    res = run_score(
        ScoreOptions(source="mimic", location=str(demo), out=direct, **common), tiny_scorer
    )
    export = tmp_path / "fhir"
    export_mimic_fhir(MimicExportConfig(demo, export))
    via_fhir = tmp_path / "via-fhir"
    run_score(
        ScoreOptions(source="ndjson", location=str(export), out=via_fhir, **common), tiny_scorer
    )
    a, b = _risks(direct), _risks(via_fhir)
    assert res.counts.patients == 123  # cohort admissions (one ledger key each)
    assert len(a) == 3 * 123
    missing = sorted(k for k in a if k not in b)
    assert missing == []
    differ = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    assert differ == {}
    assert sum(1 for v in a.values() if v[0] is not None) > 300  # scored, not abstained
