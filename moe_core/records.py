"""``PatientRecord``: the canonical, source-free view of one admission.

Every data source (CDS prefetch, a FHIR server, a Bulk NDJSON export, MIMIC-IV
csv.gz, PhysioNet 2012, the synthetic generator) produces these, and everything
right of them (featurisation, the model) is shared by training and serving.
Plain Python and NumPy only: no torch, no FHIR, no file layouts.

Times are timezone-aware UTC ``datetime`` objects. Values are in the canonical
UCUM unit of their feature (see ``moe_core.feature_spec``).

Derived events: a record's ``events`` get a Glasgow coma scale total wherever eye,
motor and verbal were charted at the same instant and no total was (see
``derive_gcs_totals``). It happens here, at construction, because every source builds
a ``PatientRecord``: MIMIC-IV never charts a total (no itemid) while a FHIR feed may
send LOINC 9269-2, and deriving it in one place keeps training and serving alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from moe_core.modalities import Modality, Task

__all__ = [
    "DEFAULT_WINDOW_HOURS",
    "FRONTAL_VIEWS",
    "GCS_COMPONENTS",
    "GCS_TOTAL",
    "UNKNOWN",
    "Demographics",
    "Event",
    "ImageRef",
    "Labels",
    "Note",
    "PatientRecord",
    "QualityNote",
    "derive_gcs_totals",
]

UNKNOWN = "unknown"  # the explicit category for any missing / unmapped categorical
DEFAULT_WINDOW_HOURS = 48  # the paper's observation window (section 3.1)
FRONTAL_VIEWS = ("AP", "PA")  # preference order: AP first, as in the paper (section 3.2.1)
# Feature codes of the Glasgow coma scale (moe_core.feature_catalog): total = eye + motor + verbal.
GCS_COMPONENTS = ("gcs_eye", "gcs_motor", "gcs_verbal")
GCS_TOTAL = "gcs_total"


@dataclass(frozen=True, slots=True)
class Demographics:
    """Static features. Categoricals are lower-case strings; ``UNKNOWN`` when absent."""

    age: float | None = None  # years, at the admission
    sex: str = UNKNOWN  # "female" | "male" | "other" | UNKNOWN
    race: str = UNKNOWN  # see feature_spec.STATIC_CATEGORIES["race"]
    ethnicity: str = UNKNOWN  # "hispanic" | "not_hispanic" | UNKNOWN
    admission_type: str = UNKNOWN  # "emergency" | "urgent" | "elective" | "observation" | UNKNOWN


@dataclass(frozen=True, slots=True)
class Event:
    """One usable measurement: a feature code and its value in the canonical unit."""

    time: datetime
    code: str  # FeatureDef.code, e.g. "heart_rate"
    value: float


def derive_gcs_totals(events: Sequence[Event]) -> list[Event]:
    """``events`` plus a ``gcs_total`` wherever all three GCS parts share an instant.

    A charted total at that instant wins (nothing is derived there). When a part was
    charted twice at the same instant, the later-listed value counts, as in
    featurisation. Idempotent: a derived total is itself "a charted total" the next
    time. Returns a new list sorted by (time, code) when something was derived, else
    ``events`` itself (as a list).
    """
    parts: dict[datetime, dict[str, float]] = {}
    charted: set[datetime] = set()
    for ev in events:
        if ev.code == GCS_TOTAL:
            charted.add(ev.time)
        elif ev.code in GCS_COMPONENTS:
            parts.setdefault(ev.time, {})[ev.code] = ev.value
    derived = [
        Event(t, GCS_TOTAL, sum(got[c] for c in GCS_COMPONENTS))
        for t, got in parts.items()
        if t not in charted and len(got) == len(GCS_COMPONENTS)
    ]
    if not derived:
        return events if isinstance(events, list) else list(events)
    # Stable: events of the same (time, code) keep their relative order.
    return sorted([*events, *derived], key=lambda e: (e.time, e.code))


@dataclass(frozen=True, slots=True)
class Note:
    """A clinical note written before the prediction time."""

    time: datetime
    kind: str  # "radiology" | "nursing" | "physician" | "progress" | "other" ...
    text: str  # plain text, de-identification artifacts already removed


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A chest X-ray: pixels now, or a loader that produces them on demand.

    Pixels are a 2-D float32 array in [0, 1], any size, with VOI LUT / windowing
    applied and MONOCHROME1 already inverted (bright = dense). Resizing to 224x224
    and normalisation happen once, in ``moe_core.features.image_tensor``.
    """

    time: datetime
    view_position: str  # DICOM ViewPosition, upper case: "AP", "PA", "LL", "LATERAL", ...
    study_id: str
    pixels: npt.NDArray[np.float32] | None = None
    loader: Callable[[], npt.NDArray[np.float32]] | None = field(
        default=None, compare=False, repr=False
    )
    content_key: str | None = None  # stable hash of the source bytes, for embedding caches

    def load(self) -> npt.NDArray[np.float32]:
        if self.pixels is not None:
            return self.pixels
        if self.loader is None:
            raise ValueError(f"image {self.study_id} has neither pixels nor a loader")
        return self.loader()

    @property
    def is_frontal(self) -> bool:
        return self.view_position in FRONTAL_VIEWS


@dataclass(frozen=True, slots=True)
class QualityNote:
    """Something dropped or doubtful, and why. Never contains patient identifiers."""

    source: str  # e.g. "Observation/abc", "chartevents itemid 220045"
    reason: str  # e.g. "unknown code", "value out of plausible range", "bad unit"
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Labels:
    """Outcome labels; ``None`` means unknown (masked out of the loss and metrics)."""

    mortality: bool | None = None
    long_los: bool | None = None
    readmission: bool | None = None

    def as_list(self) -> list[bool | None]:
        return [getattr(self, t.key) for t in Task]


@dataclass(slots=True)
class PatientRecord:
    """One admission as the model sees it (see DESIGN.md, 'PatientRecord')."""

    patient_id: str
    encounter_id: str
    anchor_time: datetime  # admission start
    prediction_time: datetime  # nothing at or after this time is an input
    static: Demographics = field(default_factory=Demographics)
    events: list[Event] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    images: list[ImageRef] = field(default_factory=list)
    quality: list[QualityNote] = field(default_factory=list)
    discharge_time: datetime | None = None
    death_time: datetime | None = None
    discharge_disposition: str | None = None
    encounter_class: str | None = None
    labels: Labels = field(default_factory=Labels)

    def __post_init__(self) -> None:
        # Every source constructs a record, so derived features are filled identically.
        self.events = derive_gcs_totals(self.events)

    @property
    def window_hours(self) -> int:
        """Hours of observation window actually covered (capped at the default window)."""
        span = (self.prediction_time - self.anchor_time) / timedelta(hours=1)
        return int(max(0, min(span, DEFAULT_WINDOW_HOURS)))

    def frontal_image(self) -> ImageRef | None:
        """The first frontal image before prediction time: AP preferred, else PA."""
        usable = [i for i in self.images if i.time < self.prediction_time]
        for view in FRONTAL_VIEWS:
            candidates = sorted(
                (i for i in usable if i.view_position == view), key=lambda i: i.time
            )
            if candidates:
                return candidates[0]
        return None

    @property
    def present(self) -> tuple[bool, bool, bool]:
        """Availability per modality, in ``Modality`` order (the batch's ``present`` row)."""
        cutoff = self.prediction_time
        ehr = any(e.time < cutoff for e in self.events)
        text = any(n.time < cutoff and n.text.strip() for n in self.notes)
        image = self.frontal_image() is not None
        flags = {Modality.EHR: ehr, Modality.TEXT: text, Modality.IMAGE: image}
        return (flags[Modality.EHR], flags[Modality.TEXT], flags[Modality.IMAGE])
