"""The synthetic cohort generator: availability mix, determinism, FHIR validity, signal."""

from __future__ import annotations

import base64
import gzip
import inspect
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from moe_core.feature_catalog import DEFAULT_SPEC
from training.synth import fhir as synth_fhir
from training.synth.availability import AvailabilityMix, paper_mix
from training.synth.generator import SynthConfig, plan_patient, write_cohort
from training.synth.images import blob_radius, chest_pixels
from training.synth.notes import COURSE_PHRASES, notes_for
from training.synth.vitals import UnitChoice, measurements


def _read(folder: Path, rtype: str) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for path in sorted(folder.glob(f"{rtype}.*.ndjson*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            out.extend(orjson.loads(line) for line in fh if line.strip())
    return out


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_cohort(SynthConfig(n_patients=120, seed=7), out, progress=False)
    return out


def test_joint_availability_reproduces_paper_counts() -> None:
    mix = paper_mix()
    assert mix.notes_present == pytest.approx(1 - 7292 / 31088)
    assert mix.image_present == pytest.approx(1 - 18871 / 31088)
    assert mix.text_image == pytest.approx(11636 / 31088)
    assert mix.image_only == pytest.approx(581 / 31088)
    assert mix.ehr_only == pytest.approx(6711 / 31088)


def test_impossible_marginals_are_rejected() -> None:
    with pytest.raises(ValueError, match="no joint distribution"):
        AvailabilityMix.from_marginals(notes_missing=0.1, image_missing=0.1, all_three=0.95)


def test_marginals_within_tolerance_on_thousands_of_patients() -> None:
    cfg = SynthConfig(n_patients=6000, seed=3)
    plans = [plan_patient(i, cfg) for i in range(cfg.n_patients)]
    notes_missing = np.mean([not p.has_notes for p in plans])
    image_missing = np.mean([not p.has_image for p in plans])
    all_three = np.mean([p.has_notes and p.has_image for p in plans])
    assert notes_missing == pytest.approx(0.235, abs=0.015)
    assert image_missing == pytest.approx(0.607, abs=0.015)
    assert all_three == pytest.approx(0.374, abs=0.015)
    mortality = np.mean([p.outcome.mortality for p in plans])
    assert 0.05 < mortality < 0.2


def test_files_follow_the_plan(cohort: Path) -> None:
    cfg = SynthConfig(n_patients=120, seed=7)
    plans = [plan_patient(i, cfg) for i in range(cfg.n_patients)]
    patients = _read(cohort, "Patient")
    assert len(patients) == 120
    docs = Counter(_encounter_of(d) for d in _read(cohort, "DocumentReference"))
    studies = Counter(_encounter_of(s) for s in _read(cohort, "ImagingStudy"))
    for plan, pat in zip(plans, patients, strict=True):
        index_stay = f"{str(pat['id'])[:-4]}e001"
        assert (docs[index_stay] > 0) == plan.has_notes
        assert (studies[index_stay] > 0) == plan.has_image
        if plan.outcome.mortality:
            assert "deceasedDateTime" in pat


def _encounter_of(resource: dict[str, object]) -> str:
    ref = resource["encounter"] if "encounter" in resource else resource["context"]
    if isinstance(ref, dict) and "encounter" in ref:
        ref = ref["encounter"][0]
    return str(ref["reference"]).split("/")[1]  # type: ignore[index]


def test_return_stays_are_real_admissions(cohort: Path) -> None:
    """Every Encounter, readmissions included, has its own vitals/labs inside 48 h."""
    encounters = _read(cohort, "Encounter")
    returns = [e for e in encounters if not str(e["id"]).endswith("e001")]
    assert len(returns) > 10
    obs = Counter(_encounter_of(o) for o in _read(cohort, "Observation"))
    for enc in encounters:
        assert obs[str(enc["id"])] >= 20, enc["id"]
    docs = Counter(_encounter_of(d) for d in _read(cohort, "DocumentReference"))
    assert any(docs[str(e["id"])] for e in returns)  # notes by the availability mix


def test_built_cohort_availability_matches_the_paper_mix(tmp_path: Path) -> None:
    """After build-cohort every admission (index and return stays) has EHR data and the
    four patterns come out near the paper's shares: no 'none' admissions."""
    from training.fhir_cohort import build_fhir_cohort

    write_cohort(SynthConfig(n_patients=700, seed=4), tmp_path / "ndjson", progress=False)
    summary = build_fhir_cohort(tmp_path / "ndjson", tmp_path / "cohort", seed=0)
    n = summary["admissions"]
    assert n > 750  # readmissions and later returns enter as admissions
    assert summary["modality_available"]["ehr"] == n
    shares = {k: v / n for k, v in summary["availability_patterns"].items()}
    mix = paper_mix()
    expected = {"E+T+I": mix.text_image, "E+T": mix.text_only, "E+I": mix.image_only,
                "E": mix.ehr_only, "T+I": 0.0, "T": 0.0, "I": 0.0, "none": 0.0}  # fmt: skip
    for pattern, share in expected.items():
        assert shares[pattern] == pytest.approx(share, abs=0.04), (pattern, shares)


def test_patients_are_marked_synthetic(cohort: Path) -> None:
    for pat in _read(cohort, "Patient"):
        tags = pat["meta"]["tag"]  # type: ignore[index]
        assert {"system": synth_fhir.SYNTHETIC_TAG_SYSTEM, "code": "synthetic",
                "display": "Synthetic data"} in tags  # fmt: skip
        assert str(pat["name"][0]["family"]).startswith("Synthetic-")  # type: ignore[index]


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for folder, seed in ((a, 5), (b, 5), (c, 6)):
        write_cohort(SynthConfig(n_patients=12, seed=seed), folder, progress=False)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        if rel.name == "synth_summary.json":
            continue  # holds the wall time
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    obs = "Observation.000.ndjson"
    assert (a / obs).read_bytes() != (c / obs).read_bytes()


def test_shards_and_gzip_hold_the_same_resources(tmp_path: Path) -> None:
    plain, sharded = tmp_path / "plain", tmp_path / "sharded"
    write_cohort(SynthConfig(n_patients=7, seed=2, images=False), plain, progress=False)
    write_cohort(
        SynthConfig(n_patients=7, seed=2, images=False, gzip=True, shard_size=3),
        sharded,
        progress=False,
    )
    assert sorted(p.name for p in sharded.glob("Patient.*")) == [
        "Patient.000.ndjson.gz", "Patient.001.ndjson.gz", "Patient.002.ndjson.gz"
    ]  # fmt: skip
    for rtype in ("Patient", "Encounter", "Observation", "DocumentReference"):
        assert _read(plain, rtype) == _read(sharded, rtype)
    assert not _read(plain, "ImagingStudy")


def test_sample_validates_as_fhir_r4b(cohort: Path) -> None:
    from fhir.resources.R4B import get_fhir_model_class

    for rtype in ("Patient", "Encounter", "Observation", "DocumentReference",
                  "ImagingStudy", "Endpoint"):  # fmt: skip
        resources = _read(cohort, rtype)
        assert resources, rtype
        for res in resources[:: max(1, len(resources) // 40)]:
            get_fhir_model_class(rtype).model_validate(res)


def test_observations_use_spec_codes_in_convertible_units(cohort: Path) -> None:
    by_loinc = DEFAULT_SPEC.by_loinc()
    units: Counter[str] = Counter()
    for obs in _read(cohort, "Observation"):
        code = obs["code"]["coding"][0]["code"]  # type: ignore[index]
        parts = obs.get("component") or [obs]
        if code == "85354-9":
            assert len(parts) == 2  # type: ignore[arg-type]
        for part in parts:  # type: ignore[union-attr]
            c = part["code"]["coding"][0]["code"]
            q = part["valueQuantity"]
            feature = by_loinc[c]
            value = feature.to_canonical(q["value"], q["code"])
            assert value is not None, (c, q)
            assert feature.is_plausible(value), (c, q)
            units[q["code"]] += 1
    assert units["[degF]"] > 0 and units["Cel"] > 0
    assert units["[lb_av]"] > 0 and units["kg"] > 0


def test_discharge_summary_is_written_at_discharge(cohort: Path) -> None:
    ends = {
        e["id"]: e["period"]["end"]  # type: ignore[index]
        for e in _read(cohort, "Encounter")
    }
    summaries = [
        d for d in _read(cohort, "DocumentReference")
        if d["type"]["coding"][0]["code"] == "18842-5"  # type: ignore[index]
    ]  # fmt: skip
    assert summaries
    for d in summaries:
        enc = str(d["context"]["encounter"][0]["reference"]).split("/")[1]  # type: ignore[index]
        assert d["date"] == ends[enc]
        text = base64.b64decode(d["content"][0]["attachment"]["data"]).decode()  # type: ignore[index]
        assert "DISCHARGE SUMMARY" in text


def test_dicom_files_exist_and_decode(cohort: Path) -> None:
    import pydicom

    studies = _read(cohort, "ImagingStudy")
    views = Counter()
    for study in studies:
        uid = str(study["identifier"][0]["value"]).removeprefix("urn:oid:")  # type: ignore[index]
        for series in study["series"]:  # type: ignore[union-attr]
            inst = series["instance"][0]
            path = cohort / "dicom" / "studies" / uid / "series" / series["uid"] / "instances"
            ds = pydicom.dcmread(path / f"{inst['uid']}.dcm")
            assert ds.pixel_array.shape == (256, 256)
            assert str(ds.PatientName).startswith("Synthetic^")
            views[str(ds.ViewPosition)] += 1
    assert views["AP"] + views["PA"] == len(studies)


def test_outcome_depends_on_each_modality() -> None:
    """Proxies read from each modality's content predict long stay; all three beat any two."""
    cfg = SynthConfig(n_patients=1500, seed=11)
    rows, y = [], []
    allowed = frozenset(DEFAULT_SPEC.by_loinc())
    for i in range(cfg.n_patients):
        p = plan_patient(i, cfg)
        ms = measurements(p.latent, 48.0, UnitChoice(False, False), p.rng, allowed)
        hr = np.mean([m.value for m in ms if m.key == "heart_rate"])
        sbp = np.mean([m.value for m in ms if m.key == "sbp"])
        sentences = [s for n in notes_for(p.latent, 48.0, p.rng) for s in n.text.split("\n")]
        course = np.mean([lvl for s in sentences for lvl, bank in enumerate(COURSE_PHRASES)
                          if s in bank])  # fmt: skip
        pixels = chest_pixels(blob_radius(p.latent.opacity), "AP", p.rng)
        lung = float(pixels[150:220, 40:120].mean())
        rows.append((hr - sbp / 2, course, lung))
        y.append(p.outcome.long_los)
    x, labels = np.array(rows), np.array(y)
    for col in range(3):
        assert roc_auc_score(labels, x[:, col]) > 0.6, col

    def fit_auc(cols: list[int]) -> float:
        xs = (x[:, cols] - x[:, cols].mean(0)) / x[:, cols].std(0)
        model = LogisticRegression().fit(xs, labels)  # 3 parameters, 1,500 rows: no overfit
        return float(roc_auc_score(labels, model.predict_proba(xs)[:, 1]))

    full = fit_auc([0, 1, 2])
    for drop in range(3):
        assert full > fit_auc([c for c in range(3) if c != drop]) + 0.005, drop


def test_shard_names_agree_with_the_cli_help(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from moe_health.cli import app
    from training.cli import synth
    from training.synth.generator import shard_width

    option = inspect.signature(synth).parameters["shard_size"].default
    assert "<Type>.<shard:03d>.ndjson" in str(option.help)
    runner = CliRunner()
    result = runner.invoke(app, ["synth", "-n", "5", "--shard-size", "2", "--no-images",
                                 "--no-progress", "--out", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.glob("Patient.*")) == [
        "Patient.000.ndjson", "Patient.001.ndjson", "Patient.002.ndjson"
    ]  # fmt: skip
    assert (shard_width(1), shard_width(1000), shard_width(1001)) == (3, 3, 4)
