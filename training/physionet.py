"""PhysioNet/CinC Challenge 2012 -> ``PatientRecord``s in the cohort format.

Each set (``set-a`` ... ``set-c``, 4,000 ICU stays each) holds one
``Time,Parameter,Value`` file per stay covering its first 48 h (``HH:MM`` since ICU
admission), read straight from ``set-<x>.tar.gz`` (or an extracted ``set-<x>/``
folder). Parameters map to the feature spec's codes in ``PARAMETER_MAP`` with their
PhysioNet units, and go through ``FeatureDef.to_canonical`` / ``is_plausible`` like
every other source. ``-1`` means missing. Unmapped parameters (urine output,
ventilation flag, troponin I, cholesterol) are counted as quality notes, never silently lost.

Labels (``Outcomes-<x>.txt``): in-hospital mortality = ``In-hospital_death``; long
stay = ``Length_of_stay`` (days from ICU admission to hospital discharge) > 7, unknown
when ``-1``; readmission is not in the data (``None``). The challenge only included
stays of at least 48 h, so no admission is excluded. The data have no calendar dates:
every stay is anchored at ``ANCHOR`` (a fixed, obviously synthetic date).
"""

from __future__ import annotations

import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from moe_core.feature_catalog import DEFAULT_SPEC
from moe_core.feature_spec import FeatureSpec
from moe_core.records import (
    DEFAULT_WINDOW_HOURS,
    UNKNOWN,
    Demographics,
    Event,
    Labels,
    PatientRecord,
    QualityNote,
)
from training.cohort_store import write_cohort
from training.labels import LONG_LOS_DAYS
from training.splits import assign_splits, split_config

__all__ = [
    "ANCHOR",
    "PARAMETER_MAP",
    "PhysioNetConfig",
    "build_physionet_cohort",
    "iter_physionet_records",
    "parse_record",
    "read_outcomes",
]

ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)
MISSING = -1.0
SOURCE = "physionet2012"

# Parameter -> (feature code, unit as recorded in the challenge data).
PARAMETER_MAP: dict[str, tuple[str, str]] = {
    "HR": ("heart_rate", "/min"),
    "SysABP": ("systolic_bp", "mm[Hg]"),
    "NISysABP": ("systolic_bp", "mm[Hg]"),
    "DiasABP": ("diastolic_bp", "mm[Hg]"),
    "NIDiasABP": ("diastolic_bp", "mm[Hg]"),
    "MAP": ("mean_bp", "mm[Hg]"),
    "NIMAP": ("mean_bp", "mm[Hg]"),
    "RespRate": ("resp_rate", "/min"),
    "Temp": ("temperature", "Cel"),
    "GCS": ("gcs_total", "{score}"),
    "Glucose": ("glucose", "mg/dL"),
    "pH": ("ph", "[pH]"),
    "FiO2": ("fio2", "1"),  # a fraction, 0.21-1.0
    "SaO2": ("spo2", "%"),
    "Creatinine": ("creatinine", "mg/dL"),
    "BUN": ("bun", "mg/dL"),
    "Na": ("sodium", "mmol/L"),
    "K": ("potassium", "mmol/L"),
    "HCO3": ("bicarbonate", "mmol/L"),
    "WBC": ("wbc", "/nL"),  # cells/nL = 10^3/uL
    "HCT": ("hematocrit", "%"),
    "Platelets": ("platelets", "/nL"),
    "Lactate": ("lactate", "mmol/L"),
    "Bilirubin": ("bilirubin", "mg/dL"),
    "Weight": ("weight", "kg"),
    "Height": ("height", "cm"),
    "PaO2": ("pao2", "mm[Hg]"),
    "PaCO2": ("paco2", "mm[Hg]"),
    "Albumin": ("albumin", "g/dL"),
    "ALT": ("alt", "IU/L"),
    "AST": ("ast", "IU/L"),
    "ALP": ("alp", "IU/L"),
    "Mg": ("magnesium", "mmol/L"),
    "TroponinT": ("troponin_t", "ug/L"),
}
_DESCRIPTORS = ("RecordID", "Age", "Gender", "ICUType")  # static, time 00:00 only
_SEX = {0.0: "female", 1.0: "male"}


@dataclass(frozen=True, slots=True)
class PhysioNetConfig:
    """Where the challenge files are, which sets, and where to write."""

    data_dir: Path
    out: Path
    sets: tuple[str, ...] = ("a",)
    window_hours: int = DEFAULT_WINDOW_HOURS
    seed: int = 0
    spec: FeatureSpec = DEFAULT_SPEC
    progress: bool = False

    def __post_init__(self) -> None:
        bad = [s for s in self.sets if s not in ("a", "b", "c")]
        if bad or not self.sets:
            raise ValueError(f"PhysioNet 2012 sets are a, b, c; got {self.sets}")
        if self.window_hours <= 0:
            raise ValueError(f"window_hours must be positive, got {self.window_hours}")


@dataclass(frozen=True, slots=True)
class Outcome:
    """One row of ``Outcomes-<x>.txt``."""

    length_of_stay: float
    survival: float
    in_hospital_death: bool


def read_outcomes(path: Path) -> dict[str, Outcome]:
    """RecordID -> outcome."""
    if not path.is_file():
        raise FileNotFoundError(f"PhysioNet 2012 outcomes file not found: {path}")
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    need = ("RecordID", "Length_of_stay", "Survival", "In-hospital_death")
    missing = [c for c in need if c not in header]
    if missing:
        raise ValueError(f"{path} lacks column(s): {', '.join(missing)}")
    idx = {c: header.index(c) for c in need}
    out: dict[str, Outcome] = {}
    for line in lines[1:]:
        if not line.strip():
            continue
        cells = line.split(",")
        out[cells[idx["RecordID"]]] = Outcome(
            float(cells[idx["Length_of_stay"]]),
            float(cells[idx["Survival"]]),
            cells[idx["In-hospital_death"]].strip() == "1",
        )
    return out


def _record_files(data_dir: Path, set_name: str) -> Iterator[tuple[str, str]]:
    """(file name, text) of every stay in a set: from the tarball, else the folder."""
    archive = data_dir / f"set-{set_name}.tar.gz"
    folder = data_dir / f"set-{set_name}"
    if archive.is_file():
        with tarfile.open(archive, "r|gz") as tar:  # streaming: one member at a time
            for member in tar:
                if member.isfile() and member.name.endswith(".txt"):
                    fh = tar.extractfile(member)
                    if fh is not None:
                        yield Path(member.name).name, fh.read().decode("utf-8")
    elif folder.is_dir():
        for path in sorted(folder.glob("*.txt")):
            yield path.name, path.read_text()
    else:
        raise FileNotFoundError(f"neither {archive} nor {folder} exists")


def _hours(stamp: str) -> timedelta:
    hh, mm = stamp.strip().split(":")
    return timedelta(hours=int(hh), minutes=int(mm))


def parse_record(
    text: str,
    outcome: Outcome | None,
    *,
    spec: FeatureSpec = DEFAULT_SPEC,
    window_hours: int = DEFAULT_WINDOW_HOURS,
    set_name: str = "a",
) -> PatientRecord:
    """One stay's ``Time,Parameter,Value`` text (+ its outcome) -> ``PatientRecord``."""
    by_code = spec.by_code()
    prediction = ANCHOR + timedelta(hours=window_hours)
    static: dict[str, float] = {}
    events: list[Event] = []
    dropped: Counter[tuple[str, str]] = Counter()
    for line in text.splitlines()[1:]:
        parts = line.split(",")
        if len(parts) != 3:
            if line.strip():
                dropped[("line", "unparsable line")] += 1
            continue
        stamp, param, raw = parts
        try:
            value, offset = float(raw), _hours(stamp)
        except ValueError:
            dropped[(param, "unparsable value")] += 1
            continue
        if param in _DESCRIPTORS:
            static[param] = value
            continue
        if value == MISSING:
            continue
        if param not in PARAMETER_MAP:
            dropped[(param, "unknown code")] += 1
            continue
        code, unit = PARAMETER_MAP[param]
        fdef = by_code[code]
        time = ANCHOR + offset
        canonical = fdef.to_canonical(value, unit)
        if time >= prediction:
            dropped[(param, "after prediction time")] += 1
        elif canonical is None:
            dropped[(param, "unknown unit")] += 1
        elif not fdef.is_plausible(canonical):
            dropped[(param, "value out of plausible range")] += 1
        else:
            events.append(Event(time, code, canonical))
    record_id = str(int(static["RecordID"])) if "RecordID" in static else "unknown"
    age = static.get("Age", MISSING)
    labels = Labels()
    if outcome is not None:
        los = outcome.length_of_stay
        labels = Labels(
            mortality=outcome.in_hospital_death,
            long_los=None if los < 0 else los > LONG_LOS_DAYS,
            readmission=None,
        )
    events.sort(key=lambda e: (e.time, e.code))
    return PatientRecord(
        patient_id=f"{SOURCE}-{record_id}",
        encounter_id=f"{SOURCE}-{set_name}-{record_id}",
        anchor_time=ANCHOR,
        prediction_time=prediction,
        static=Demographics(
            age=None if age == MISSING else age,
            sex=_SEX.get(static.get("Gender", MISSING), UNKNOWN),
        ),
        events=events,
        quality=[
            QualityNote(f"{SOURCE} {param}", reason, f"n={n}")
            for (param, reason), n in sorted(dropped.items())
        ],
        encounter_class="icu",
        labels=labels,
    )


def iter_physionet_records(cfg: PhysioNetConfig) -> Iterator[PatientRecord]:
    """Records of every configured set, streamed from the archives."""
    for set_name in cfg.sets:
        outcomes = read_outcomes(cfg.data_dir / f"Outcomes-{set_name}.txt")
        for _name, text in _record_files(cfg.data_dir, set_name):
            rid = (
                text.split("RecordID,", 1)[1].split("\n", 1)[0].strip()
                if "RecordID," in text
                else ""
            )
            key = str(int(float(rid))) if rid else ""
            yield parse_record(
                text, outcomes.get(key), spec=cfg.spec, window_hours=cfg.window_hours,
                set_name=set_name,
            )  # fmt: skip


def build_physionet_cohort(cfg: PhysioNetConfig) -> dict[str, Any]:
    """Write the cohort folder; returns the saved summary."""
    ids: list[str] = []
    for set_name in cfg.sets:
        ids += [f"{SOURCE}-{k}" for k in read_outcomes(cfg.data_dir / f"Outcomes-{set_name}.txt")]
    splits = assign_splits(ids, seed=cfg.seed)
    records: Iterator[PatientRecord] = iter_physionet_records(cfg)
    if cfg.progress:
        from tqdm import tqdm

        records = iter(tqdm(records, total=len(ids), desc="stays", unit="stay"))
    n_with_outcome = len(ids)
    info = {
        "source": f"PhysioNet/CinC 2012 set(s) {', '.join(cfg.sets)}",
        "data_dir": str(cfg.data_dir),
        "window_hours": cfg.window_hours,
        "spec_version": cfg.spec.version,
        "steps": [{"name": "ICU stays with outcomes (>= 48 h by design)",
                   "count": n_with_outcome, "removed": 0}],
        "split_config": split_config(cfg.seed),
    }  # fmt: skip
    return write_cohort(records, cfg.out, splits=lambda pid: splits.get(pid, "train"), summary=info)
