"""Stream a synthetic cohort to FHIR R4 Bulk NDJSON (+ DICOM files).

One patient at a time: each draws from its own generator seeded by ``(seed, index)``,
so output is deterministic, independent of sharding, and memory stays constant from 1
to 1,000,000 patients. Files are ``<Type>.<shard:03d>.ndjson[.gz]`` as in a Bulk Data
export, one shard per ``shard_size`` patients (shard numbers are zero-padded to 3
digits, or more when there are more than 1,000 shards, so names sort in shard order).
A patient has an index admission and, after a drawn 30-day readmission (or, for 15%
of the others, long after), return admissions; every admission has its own vitals and
labs, and notes and a chest X-ray by the availability mix. See ``outcomes.py`` for the outcome
model and ``availability.py`` for the modality mix.
"""

from __future__ import annotations

import gzip
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np
import orjson
from tqdm import tqdm

from training.synth import fhir
from training.synth.availability import AvailabilityMix, paper_mix
from training.synth.images import SynthImage, blob_radius, chest_pixels, dicom_uid, write_dicom
from training.synth.notes import SynthNote, discharge_summary, notes_for, radiology_report
from training.synth.outcomes import LatentPatient, Outcomes, draw_latent, draw_outcomes
from training.synth.vitals import UnitChoice, measurements

__all__ = [
    "SUMMARY_FILE",
    "PatientPlan",
    "SynthConfig",
    "SynthSummary",
    "plan_patient",
    "shard_width",
    "spec_loinc_codes",
    "write_cohort",
]

SUMMARY_FILE = "synth_summary.json"
_BASE_TIME = datetime(2150, 1, 1, tzinfo=UTC)  # far future: obviously not a real stay
_RACES = (
    ("2106-3", "White", 0.62),
    ("2054-5", "Black or African American", 0.16),
    ("2028-9", "Asian", 0.05),
    ("2131-1", "Other Race", 0.12),
    ("1002-5", "American Indian or Alaska Native", 0.03),
    ("2076-8", "Native Hawaiian or Other Pacific Islander", 0.02),
)
_RACE_P = np.array([r[2] for r in _RACES])
_PRIORITIES = ("EM", "UR", "EL")
_PRIORITY_P = np.array([0.75, 0.10, 0.15])
_DISPOSITIONS = ("home", "snf", "rehab")
_DISPOSITION_P = np.array([0.7, 0.2, 0.1])


@dataclass(frozen=True, slots=True)
class SynthConfig:
    """What to generate. ``hours``: how much of each stay gets vitals, labs and notes."""

    n_patients: int
    seed: int = 0
    images: bool = True
    gzip: bool = False
    shard_size: int = 100_000
    hours: float = 54.0
    fahrenheit_share: float = 0.3
    pounds_share: float = 0.4
    mix: AvailabilityMix = field(default_factory=paper_mix)

    def __post_init__(self) -> None:
        if self.n_patients < 1:
            raise ValueError(f"n_patients must be >= 1, got {self.n_patients}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        if self.hours < 48:
            raise ValueError(f"hours must cover the 48 h window, got {self.hours}")


@dataclass(slots=True)
class SynthSummary:
    """Counts of what was written: availability patterns and outcomes per admission
    (index stays and return stays), resources, DICOM files."""

    n_patients: int = 0
    n_admissions: int = 0
    patterns: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    resources: Counter[str] = field(default_factory=Counter)
    dicom_files: int = 0
    seconds: float = 0.0
    spec_filtered: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "n_patients": self.n_patients,
            "n_admissions": self.n_admissions,
            "patterns": dict(sorted(self.patterns.items())),
            "outcomes": dict(sorted(self.outcomes.items())),
            "resources": dict(sorted(self.resources.items())),
            "dicom_files": self.dicom_files,
            "seconds": round(self.seconds, 3),
            "spec_filtered": self.spec_filtered,
        }

    def to_text(self) -> str:
        n = max(self.n_admissions, 1)
        lines = [
            f"synthetic patients: {self.n_patients} ({self.n_admissions} admissions) "
            f"in {self.seconds:.1f} s; patterns and outcomes per admission:"
        ]
        for name, c in sorted(self.patterns.items()):
            lines.append(f"  pattern {name:6s} {c:8d} ({100 * c / n:5.1f}%)")
        for name, c in sorted(self.outcomes.items()):
            lines.append(f"  {name:12s} {c:8d} ({100 * c / n:5.1f}%)")
        for name, c in sorted(self.resources.items()):
            lines.append(f"  {name:18s} {c:10d}")
        lines.append(f"  DICOM files        {self.dicom_files:10d}")
        return "\n".join(lines)


def spec_loinc_codes() -> frozenset[str] | None:
    """LOINC codes of the default feature spec, or ``None`` when it is not importable."""
    try:
        from moe_core.feature_catalog import DEFAULT_SPEC
    except ModuleNotFoundError:
        return None
    return frozenset(DEFAULT_SPEC.by_loinc())


def shard_width(n_shards: int) -> int:
    """Digits of the shard number in file names: 3, or more for over 1,000 shards."""
    return max(3, len(str(max(n_shards, 1) - 1)))


class _ShardedWriter:
    """One open file per resource type for the current shard; closes on shard change."""

    def __init__(self, out: Path, use_gzip: bool, n_shards: int = 1) -> None:
        self.out = out
        self.gzip = use_gzip
        self.width = shard_width(n_shards)
        self.shard = 0
        self.handles: dict[str, BinaryIO] = {}

    def set_shard(self, shard: int) -> None:
        if shard != self.shard:
            self.close()
            self.shard = shard

    def write(self, resource: fhir.Resource) -> None:
        rtype = str(resource["resourceType"])
        fh = self.handles.get(rtype)
        if fh is None:
            name = f"{rtype}.{self.shard:0{self.width}d}.ndjson" + (".gz" if self.gzip else "")
            path = self.out / name
            # Held open across patients on purpose; close() runs in write_cohort's finally.
            if self.gzip:
                fh = cast(BinaryIO, gzip.open(path, "wb", compresslevel=5))  # noqa: SIM115
            else:
                fh = path.open("wb")
            self.handles[rtype] = fh
        fh.write(orjson.dumps(resource) + b"\n")

    def close(self) -> None:
        for fh in self.handles.values():
            fh.close()
        self.handles.clear()


def _at(anchor: datetime, hours: float) -> datetime:
    return (anchor + timedelta(hours=hours)).replace(microsecond=0)


@dataclass(slots=True)
class PatientPlan:
    """The first draws of patient ``index``: latent state, availability and outcomes.

    ``rng`` continues from there and generates the resources.
    """

    rng: np.random.Generator
    latent: LatentPatient
    has_notes: bool
    has_image: bool
    outcome: Outcomes


def plan_patient(index: int, cfg: SynthConfig) -> PatientPlan:
    """Draw patient ``index``'s hidden state exactly as ``write_cohort`` does."""
    rng = np.random.default_rng([cfg.seed, index])
    latent = draw_latent(rng)
    has_notes, has_image = cfg.mix.sample(rng)
    outcome = draw_outcomes(latent, rng)
    return PatientPlan(rng, latent, has_notes, has_image and cfg.images, outcome)


MAX_STAYS = 4  # a chain of readmissions stops here (the last stay's readmission is dropped)


@dataclass(frozen=True, slots=True)
class _Stay:
    """One admission of a patient: its own latent state, availability and outcomes."""

    number: int  # 0 = the index admission
    eid: str
    latent: LatentPatient
    has_notes: bool
    has_image: bool
    outcome: Outcomes
    anchor: datetime
    los_h: float

    @property
    def discharge(self) -> datetime:
        return _at(self.anchor, self.los_h)


def _length_of_stay(outcome: Outcomes, rng: np.random.Generator) -> float:
    """Hours in hospital: > 7 days when ``long_los``, else 50 h to 7 days (past the window)."""
    if outcome.long_los:
        return 24.0 * (7.05 + float(rng.gamma(2.0, 2.5)))
    return float(rng.uniform(50.0, 167.5))


def _return_stay(prev: _Stay, pid: str, cfg: SynthConfig, rng: np.random.Generator) -> _Stay | None:
    """The next admission after ``prev``, or ``None``.

    A drawn readmission returns within 1-29.5 days; otherwise 15% of index patients
    discharged alive come back 45-365 days later (outside the 30-day window). A return
    stay is a real admission: a fresh illness episode (new latent factors, the same
    patient one stay older), its own availability draw from the mix and its own
    outcomes from the same logistic model.
    """
    if prev.outcome.mortality or prev.number + 1 >= MAX_STAYS:
        return None
    later: float | None = None
    if prev.outcome.readmission:
        later = float(rng.uniform(1.0, 29.5))
    elif prev.number == 0 and rng.random() < 0.15:
        later = float(rng.uniform(45.0, 365.0))  # a return long after the 30-day window
    if later is None:
        return None
    fresh = draw_latent(rng)
    age = min(prev.latent.age + (prev.los_h / 24.0 + later) / 365.25, 95.0)
    latent = LatentPatient(age, fresh.severity, fresh.drift, fresh.course, fresh.opacity)
    has_notes, has_image = cfg.mix.sample(rng)
    outcome = draw_outcomes(latent, rng)
    number = prev.number + 1
    return _Stay(
        number, f"{pid[:-4]}e{number + 1:03d}", latent, has_notes, has_image and cfg.images,
        outcome, _at(prev.discharge, later * 24.0), _length_of_stay(outcome, rng),
    )  # fmt: skip


def _write_stay(
    stay: _Stay,
    index: int,
    pid: str,
    units: UnitChoice,
    cfg: SynthConfig,
    allowed: frozenset[str] | None,
    writer: _ShardedWriter,
    out: Path,
    summary: SynthSummary,
    rng: np.random.Generator,
) -> None:
    """The Encounter of one stay with its vitals/labs, notes and chest X-ray."""
    latent, outcome, anchor, eid = stay.latent, stay.outcome, stay.anchor, stay.eid
    if outcome.mortality:
        disposition = "exp"
    else:
        disposition = _DISPOSITIONS[int(rng.choice(3, p=_DISPOSITION_P))]
    priority = _PRIORITIES[int(rng.choice(3, p=_PRIORITY_P))]
    writer.write(fhir.encounter(eid, pid, anchor, stay.discharge, priority, disposition))
    summary.resources["Encounter"] += 1

    observed_h = min(stay.los_h, cfg.hours)
    for k, m in enumerate(measurements(latent, observed_h, units, rng, allowed)):
        writer.write(fhir.observation(f"{eid}-o{k}", pid, eid, _at(anchor, m.hour), m))
        summary.resources["Observation"] += 1

    notes = notes_for(latent, observed_h, rng) if stay.has_notes else []
    if stay.has_image:
        # UIDs of the index stay are unchanged from earlier versions; later stays get their own.
        tag: tuple[object, ...] = (index,) if stay.number == 0 else (index, f"stay{stay.number}")
        study_h = float(rng.uniform(1.0, 40.0))
        radius = blob_radius(latent.opacity)
        frontal = "AP" if rng.random() < 0.75 else "PA"
        views = [frontal] + (["LL"] if rng.random() < (0.6 if frontal == "PA" else 0.1) else [])
        study_uid = dicom_uid(cfg.seed, *tag, "study")
        modality = "DX" if rng.random() < 0.7 else "CR"
        mono1 = modality == "CR" and rng.random() < 0.5
        films = [
            SynthImage(
                dicom_uid(cfg.seed, *tag, "sop", v), dicom_uid(cfg.seed, *tag, "series", v),
                v, modality, mono1,
            )
            for v in views
        ]  # fmt: skip
        taken = _at(anchor, study_h)
        accession = f"SYN{index:08d}" + (f"S{stay.number}" if stay.number else "")
        for film in films:
            write_dicom(
                out / fhir.instance_path(study_uid, film),
                chest_pixels(radius, film.view, rng),
                film,
                study_uid=study_uid,
                patient_id=pid,
                patient_name=f"Synthetic^{index:08d}",
                taken=taken,
                accession=accession,
            )
            summary.dicom_files += 1
        writer.write(fhir.imaging_study(f"{eid}-i1", pid, eid, taken, study_uid, films))
        summary.resources["ImagingStudy"] += 1
        if stay.has_notes:
            text = radiology_report(frontal, radius)
            notes.append(SynthNote(round(study_h + 1.0, 3), "radiology", text))
    if stay.has_notes:
        notes.append(discharge_summary(outcome, stay.los_h))
    for k, note in enumerate(notes):
        writer.write(fhir.document_reference(f"{eid}-d{k}", pid, eid, _at(anchor, note.hour), note))
        summary.resources["DocumentReference"] += 1

    letters = "E" + ("+T" if stay.has_notes else "") + ("+I" if stay.has_image else "")
    summary.patterns[letters] += 1
    summary.n_admissions += 1
    for task in ("mortality", "long_los", "readmission"):
        summary.outcomes[task] += int(getattr(outcome, task))


def _patient(
    index: int,
    cfg: SynthConfig,
    allowed: frozenset[str] | None,
    writer: _ShardedWriter,
    out: Path,
    summary: SynthSummary,
) -> None:
    plan = plan_patient(index, cfg)
    rng, latent, outcome = plan.rng, plan.latent, plan.outcome
    pid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"moe-health-synth/{cfg.seed}/{index}"))
    anchor = _at(_BASE_TIME, float(rng.integers(0, 3650)) * 24 + float(rng.uniform(0, 24)))
    stay = _Stay(0, f"{pid[:-4]}e001", latent, plan.has_notes, plan.has_image, outcome,
                 anchor, _length_of_stay(outcome, rng))  # fmt: skip
    sex = "female" if rng.random() < 0.45 else "male"
    race = _RACES[int(rng.choice(len(_RACES), p=_RACE_P))]
    ethnicity = ("2135-2", "Hispanic or Latino") if rng.random() < 0.08 else (
        "2186-5", "Not Hispanic or Latino")  # fmt: skip
    birth = (anchor - timedelta(days=latent.age * 365.25)).date().isoformat()
    units = UnitChoice(rng.random() < cfg.fahrenheit_share, rng.random() < cfg.pounds_share)
    died: datetime | None = None
    current: _Stay | None = stay
    while current is not None:
        _write_stay(current, index, pid, units, cfg, allowed, writer, out, summary, rng)
        if current.outcome.mortality:
            died = current.discharge
        current = _return_stay(current, pid, cfg, rng)
    writer.write(
        fhir.patient(pid, index, sex, birth, (race[0], race[1]), ethnicity, died)
    )  # fmt: skip
    summary.resources["Patient"] += 1


def write_cohort(cfg: SynthConfig, out: Path, *, progress: bool = True) -> SynthSummary:
    """Generate ``cfg.n_patients`` patients into ``out`` and return the counts.

    Also writes ``synth_summary.json`` (config + counts) and a README stating the data
    are synthetic.
    """
    out.mkdir(parents=True, exist_ok=True)
    allowed = spec_loinc_codes()
    summary = SynthSummary(spec_filtered=allowed is not None)
    n_shards = -(-cfg.n_patients // cfg.shard_size)
    writer = _ShardedWriter(out, cfg.gzip, n_shards)
    started = time.perf_counter()
    try:
        if cfg.images:
            writer.write(fhir.dicom_endpoint())
            summary.resources["Endpoint"] += 1
        for index in tqdm(range(cfg.n_patients), disable=not progress, desc="synth", unit="pt"):
            writer.set_shard(index // cfg.shard_size)
            _patient(index, cfg, allowed, writer, out, summary)
            summary.n_patients += 1
    finally:
        writer.close()
    summary.seconds = time.perf_counter() - started
    config = {k: v for k, v in asdict(cfg).items() if k != "mix"}
    config["mix"] = asdict(cfg.mix)
    (out / SUMMARY_FILE).write_bytes(
        orjson.dumps({"config": config, "summary": summary.to_dict()}, option=orjson.OPT_INDENT_2)
    )
    (out / "README.md").write_text(
        "# Synthetic cohort (not real patients)\n\n"
        "Generated by `moe-health synth`: every resource is tagged `synthetic` and labelled "
        "HTEST (test health data). Outcomes follow the documented logistic model in "
        "`training/synth/outcomes.py`.\n",
        encoding="utf-8",
    )
    return summary
