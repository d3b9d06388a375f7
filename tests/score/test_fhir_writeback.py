"""``--fhir`` against a real sekmet-fhir server: $export, score, write back, read back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from training.score import keys
from training.score.job import ScoreOptions, run_score
from training.score.run_store import iter_ndjson

pytestmark = pytest.mark.integration

# Bundles with scorable inpatient admissions (vitals/labs inside the first 48 h).
N_BUNDLES = 6


@pytest.mark.slow
def test_export_score_write_back_and_read_back(
    synthea_bundles: list[Path], tiny_scorer: Any, tiny_ckpt: Path, tmp_path: Path
) -> None:
    from fhir_adapters.client import FhirClient
    from tests.servers import start_sekmet

    with start_sekmet(tmp_path) as base:
        with FhirClient(base, timeout=120) as client:
            for path in synthea_bundles[:N_BUNDLES]:
                client.transaction(orjson.loads(path.read_bytes()))
        out = tmp_path / "out"
        opts = ScoreOptions(
            source="fhir",
            location=base,
            out=out,
            checkpoint=tiny_ckpt,
            write_back=True,
            write_back_batch=4,  # several bundles
            record_job=False,
            progress=False,
            device="cpu",
        )
        result = run_score(opts, scorer=tiny_scorer)
        written = {r["id"]: r for r in iter_ndjson(out / keys.RISK_NDJSON_FILE)}
        assert result.counts.patients == N_BUNDLES
        assert written and result.written_back == len(written)
        assert (out / "export").is_dir()
        with FhirClient(base, timeout=60, max_pages=100) as client:
            on_server = {r["id"]: r for r in client.search("RiskAssessment", {"_count": "50"})}
            for rid, ra in written.items():
                back = on_server[rid]
                assert back["subject"] == ra["subject"]
                assert back["encounter"] == ra["encounter"]
                assert back["prediction"][0]["probabilityDecimal"] == pytest.approx(
                    ra["prediction"][0]["probabilityDecimal"], abs=1e-12
                )
                assert back["method"]["coding"][0]["version"] == "tiny-0"
        assert set(on_server) == set(written)
        # a second write-back of the same results updates, never duplicates (PUT by id)
        again = run_score(
            ScoreOptions(**{**_fields(opts), "out": tmp_path / "again"}), scorer=tiny_scorer
        )
        assert again.written_back == len(written)
        with FhirClient(base, timeout=60, max_pages=100) as client:
            assert len(client.search("RiskAssessment", {"_count": "50"})) == len(written)


def _fields(opts: ScoreOptions) -> dict[str, Any]:
    return {f: getattr(opts, f) for f in opts.__dataclass_fields__ if f != "job_id"}
