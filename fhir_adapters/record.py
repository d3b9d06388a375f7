"""The assembler: FHIR resources of one or more patients -> one ``PatientRecord`` per admission.

Rules (the same for a CDS prefetch, a REST fetch and a Bulk NDJSON export):

* one record per inpatient Encounter (class IMP / ACUTE / NONAC) with a ``period.start``;
* ``anchor_time`` = ``period.start``; ``prediction_time`` = anchor + ``window_hours``, or
  the given ``prediction_time`` ("now") when that is earlier; an admission that has not
  started by then yields no record;
* inputs are what lies in ``[anchor_time, prediction_time)``: Observations (whatever
  encounter they cite) whose result was also ``issued`` before ``prediction_time``
  (when ``issued`` is given), notes, images; discharge summaries never;
* resources of the same type and id are kept once (the latest ``meta.lastUpdated``);
* a malformed resource is skipped and recorded in ``quality``, never fatal; quality notes
  carrying a time outside the window are not attached to that record;
* labels follow ``training.labels`` (in-hospital death, stay > 7 days, readmission in 30
  days among the inpatient encounters given).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from fhir_adapters.encounter import EncounterInfo, parse_encounter
from fhir_adapters.errors import MalformedResourceError
from fhir_adapters.fhir_keys import (
    RT_DIAGNOSTIC_REPORT,
    RT_DOCUMENT_REFERENCE,
    RT_ENCOUNTER,
    RT_IMAGING_STUDY,
    RT_OBSERVATION,
    RT_PATIENT,
    SUPPORTED_TYPES,
    TEXT_CONTENT_PREFIXES,
)
from fhir_adapters.fhir_time import parse_fhir_datetime, parse_fhir_input_time
from fhir_adapters.notes import BinaryResolver, note_from_resource
from fhir_adapters.observation import (
    ObservationIndex,
    ObservationResult,
    TimedNote,
    observation_events,
)
from fhir_adapters.patient import death_time, demographics
from fhir_adapters.quality import (
    DUPLICATE,
    IMAGE_FAILED,
    MALFORMED,
    NO_PATIENT,
    UNKNOWN_CODE,
    summary_note,
)
from fhir_adapters.references import patient_id_of
from moe_core.feature_catalog import DEFAULT_SPEC
from moe_core.feature_spec import FeatureSpec
from moe_core.records import (
    DEFAULT_WINDOW_HOURS,
    Event,
    ImageRef,
    Note,
    PatientRecord,
    QualityNote,
)

__all__ = [
    "BuildReport",
    "StudyImageSource",
    "build_patient_records",
    "build_records",
    "build_unique_patient_records",
    "unique_order",
]

Resource = Mapping[str, Any]
# Resources without a patient that image sources may need (DICOMweb address, DICOM bytes).
_SHARED_TYPES = frozenset({"Endpoint", "Binary", "Media"})
_RELATED_TYPES = frozenset({"Endpoint", "Binary", "Media", RT_DOCUMENT_REFERENCE})
# Content types read as note text; notes.py ranks the same ones (plain, html, xhtml, text/*).
_TEXT_LIKE = TEXT_CONTENT_PREFIXES


class StudyImageSource(Protocol):
    """What ``build_records`` needs of an image source (``fhir_adapters.imaging.ImageSource``)."""

    def images_for(
        self, study: Resource, related: Sequence[Resource]
    ) -> tuple[list[ImageRef], list[QualityNote]]: ...


@dataclass(slots=True)
class BuildReport:
    """Counts over a whole run (all patients): what was read, ignored or unusable."""

    resources: Counter[str] = field(default_factory=Counter)
    ignored_types: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    malformed: int = 0
    patients: int = 0
    patients_without_admission: int = 0
    records: int = 0

    def add(self, other: BuildReport) -> None:
        """Add ``other`` 's counts to these."""
        self.resources.update(other.resources)
        self.ignored_types.update(other.ignored_types)
        self.duplicates += other.duplicates
        self.malformed += other.malformed
        self.patients += other.patients
        self.patients_without_admission += other.patients_without_admission
        self.records += other.records


_INDEXES: dict[int, tuple[FeatureSpec, ObservationIndex]] = {}


def _index(spec: FeatureSpec) -> ObservationIndex:
    hit = _INDEXES.get(id(spec))
    if hit is None or hit[0] is not spec:
        hit = (spec, ObservationIndex(spec))
        _INDEXES[id(spec)] = hit
    return hit[1]


def _last_updated_value(res: Resource) -> str | None:
    """The raw ``meta.lastUpdated`` string (parsed only if the resource has a duplicate)."""
    meta = res.get("meta")
    value = meta.get("lastUpdated") if isinstance(meta, Mapping) else None
    return value if isinstance(value, str) else None


def unique_order(resources: Iterable[Resource]) -> tuple[list[int], int]:
    """Which resources to keep, one per (type, id), and how many duplicates were dropped.

    Returns positions in ``resources``: the kept resource of each (type, id) in order of
    the key's first occurrence, then the resources without an id. Of duplicates, the
    latest ``meta.lastUpdated`` wins, else the first. ``meta.lastUpdated`` is compared as
    an instant: strings with different offsets or precision ("...T10:00:00+02:00" vs
    "...T09:00:00Z") do not sort as text. Only positions and ``lastUpdated`` strings are
    held, never the resources, so ``resources`` may be parsed on the fly and dropped.
    """
    kept: dict[tuple[str, str], tuple[int, str | None]] = {}
    anonymous: list[int] = []
    dropped = 0
    for i, res in enumerate(resources):
        rid = res.get("id")
        if not isinstance(rid, str) or not rid:
            anonymous.append(i)
            continue
        key = (str(res.get("resourceType")), rid)
        old = kept.get(key)
        if old is None:
            kept[key] = (i, _last_updated_value(res))
            continue
        dropped += 1
        new_value = _last_updated_value(res)
        new_t = parse_fhir_datetime(new_value)
        old_t = parse_fhir_datetime(old[1])
        if new_t is not None and (old_t is None or new_t > old_t):
            kept[key] = (i, new_value)
    return [*(i for i, _ in kept.values()), *anonymous], dropped


def _window_events(
    events: Sequence[tuple[Event, datetime | None]], start: datetime, end: datetime
) -> list[Event]:
    """Events measured in ``[start, end)`` whose result was known before ``end``."""
    return [e for e, known in events if start <= e.time < end and (known is None or known < end)]


def _in_window(t: datetime | None, start: datetime, end: datetime) -> bool:
    return t is None or start <= t < end


def _is_text_document(res: Resource) -> bool:
    """False for DocumentReferences that only carry images / DICOM (those are not notes)."""
    if res.get("resourceType") != RT_DOCUMENT_REFERENCE:
        return True
    types = [
        str(c["attachment"].get("contentType") or "")
        for c in res.get("content") or ()
        if isinstance(c, Mapping) and isinstance(c.get("attachment"), Mapping)
    ]
    return not types or any(not t or t.startswith(_TEXT_LIKE) for t in types)


@dataclass(slots=True)
class _PatientInputs:
    patient: Resource | None = None
    encounters: list[EncounterInfo] = field(default_factory=list)
    obs: ObservationResult = field(default_factory=ObservationResult)
    notes: list[Note] = field(default_factory=list)
    timed: list[TimedNote] = field(default_factory=list)
    always: list[QualityNote] = field(default_factory=list)
    studies: list[Resource] = field(default_factory=list)
    related: list[Resource] = field(default_factory=list)


def _source(rtype: object, res: Resource) -> str:
    """A malformed resource's ``QualityNote.source`` (built only when one is written)."""
    return f"{rtype}/{res.get('id', '?')}"


def _collect(
    resources: Iterable[Resource],
    spec: FeatureSpec,
    resolver: BinaryResolver | None,
    report: BuildReport,
) -> _PatientInputs:
    index = _index(spec)
    got = _PatientInputs()
    ignored: Counter[str] = Counter()
    for res in resources:
        rtype = res.get("resourceType")
        try:
            if rtype == RT_OBSERVATION:
                observation_events(res, index, got.obs)
            elif rtype == RT_ENCOUNTER:
                got.encounters.append(parse_encounter(res))
            elif rtype == RT_PATIENT:
                got.patient = res
            elif rtype in (RT_DOCUMENT_REFERENCE, RT_DIAGNOSTIC_REPORT):
                if rtype == RT_DIAGNOSTIC_REPORT and not res.get("presentedForm"):
                    continue  # a lab panel grouping Observations, not a note
                if not _is_text_document(res):
                    got.related.append(res)
                    continue
                result = note_from_resource(res, resolver)
                got.timed.extend(result.quality)
                if result.note is not None:
                    got.notes.append(result.note)
            elif rtype == RT_IMAGING_STUDY:
                got.studies.append(res)
            if rtype in _RELATED_TYPES:
                got.related.append(res)
            elif rtype not in SUPPORTED_TYPES:
                ignored[str(rtype)] += 1
        except MalformedResourceError as exc:
            report.malformed += 1
            got.always.append(QualityNote(_source(rtype, res), MALFORMED, str(exc)))
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            report.malformed += 1
            got.always.append(QualityNote(_source(rtype, res), MALFORMED, type(exc).__name__))
    report.ignored_types.update(ignored)
    if got.patient is None:
        got.always.append(QualityNote("Patient", NO_PATIENT))
    unknown = summary_note(RT_OBSERVATION, UNKNOWN_CODE, got.obs.unknown_codes)
    if unknown is not None:
        got.always.append(unknown)
    return got


def _images(
    got: _PatientInputs,
    shared: Sequence[Resource],
    source: StudyImageSource | None,
    start: datetime,
    end: datetime,
) -> tuple[list[ImageRef], list[QualityNote]]:
    images: list[ImageRef] = []
    notes: list[QualityNote] = []
    if source is None:
        return images, notes
    related = [*got.related, *shared]
    for study in got.studies:
        started = parse_fhir_input_time(study.get("started"))
        if started is not None and not start <= started < end:
            continue
        try:
            refs, qn = source.images_for(study, related)
        except Exception as exc:
            notes.append(
                QualityNote(f"ImagingStudy/{study.get('id', '?')}", IMAGE_FAILED, repr(exc))
            )
            continue
        images.extend(r for r in refs if start <= r.time < end)
        notes.extend(qn)
    return images, notes


def build_patient_records(
    patient_id: str,
    resources: Sequence[Resource],
    *,
    prediction_time: datetime | None = None,
    window_hours: int = DEFAULT_WINDOW_HOURS,
    spec: FeatureSpec = DEFAULT_SPEC,
    binary_resolver: BinaryResolver | None = None,
    image_source: StudyImageSource | None = None,
    shared: Sequence[Resource] = (),
    inpatient_only: bool = True,
    report: BuildReport | None = None,
) -> list[PatientRecord]:
    """Records of one patient from that patient's resources (duplicates are dropped here)."""
    listed = resources if isinstance(resources, Sequence) else list(resources)
    order, dropped = unique_order(listed)
    return build_unique_patient_records(
        patient_id,
        [listed[i] for i in order],
        dropped=dropped,
        prediction_time=prediction_time,
        window_hours=window_hours,
        spec=spec,
        binary_resolver=binary_resolver,
        image_source=image_source,
        shared=shared,
        inpatient_only=inpatient_only,
        report=report,
    )


def build_unique_patient_records(
    patient_id: str,
    unique: Iterable[Resource],
    *,
    dropped: int = 0,
    prediction_time: datetime | None = None,
    window_hours: int = DEFAULT_WINDOW_HOURS,
    spec: FeatureSpec = DEFAULT_SPEC,
    binary_resolver: BinaryResolver | None = None,
    image_source: StudyImageSource | None = None,
    shared: Sequence[Resource] = (),
    inpatient_only: bool = True,
    report: BuildReport | None = None,
) -> list[PatientRecord]:
    """``build_patient_records`` on resources already deduplicated (``unique_order``);
    ``dropped`` duplicates are reported. ``unique`` is read once, in order: it may be a
    generator parsing each resource on demand, so a patient's parsed resources need not
    all be alive at once (fewer long-lived objects for the garbage collector to scan).
    """
    from training.labels import label_admission  # pure module; keeps the label rules in one place

    report = report if report is not None else BuildReport()
    report.duplicates += dropped
    got = _collect(unique, spec, binary_resolver, report)
    if dropped:
        detail = f"{dropped} duplicate resources dropped"
        got.always.append(QualityNote("Bundle", DUPLICATE, detail))
    admissions = sorted(
        (e for e in got.encounters if e.is_inpatient or not inpatient_only),
        key=lambda e: e.start,
    )
    if not admissions:
        report.patients_without_admission += 1
    events = sorted(
        zip(got.obs.events, got.obs.known, strict=True), key=lambda p: (p[0].time, p[0].code)
    )
    timed = got.obs.notes + got.timed
    dead = death_time(got.patient) if got.patient is not None else None
    records: list[PatientRecord] = []
    for enc in admissions:
        cutoff = enc.start + timedelta(hours=window_hours)
        if prediction_time is not None and prediction_time < cutoff:
            cutoff = prediction_time
        if cutoff <= enc.start:
            continue
        images, image_notes = _images(got, shared, image_source, enc.start, cutoff)
        quality = [
            *got.always,
            *(q for t, q in timed if _in_window(t, enc.start, cutoff)),
            *image_notes,
        ]
        others = [o.start for o in admissions if o is not enc]
        labels = label_admission(
            anchor_time=enc.start,
            prediction_time=cutoff,
            discharge_time=enc.end,
            death_time=dead,
            expire_flag=None,
            other_admissions=others,
        )
        records.append(
            PatientRecord(
                patient_id=patient_id,
                encounter_id=enc.encounter_id,
                anchor_time=enc.start,
                prediction_time=cutoff,
                static=demographics(got.patient, enc.start, enc.admission_type),
                events=_window_events(events, enc.start, cutoff),
                notes=sorted(
                    (n for n in got.notes if enc.start <= n.time < cutoff), key=lambda n: n.time
                ),
                images=sorted(images, key=lambda i: i.time),
                quality=quality,
                discharge_time=enc.end,
                death_time=dead,
                discharge_disposition=enc.disposition,
                encounter_class=enc.class_code,
                labels=labels,
            )
        )
    report.records += len(records)
    return records


def build_records(
    resources: Iterable[Resource],
    *,
    prediction_time: datetime | None = None,
    window_hours: int = DEFAULT_WINDOW_HOURS,
    spec: FeatureSpec = DEFAULT_SPEC,
    binary_resolver: BinaryResolver | None = None,
    image_source: StudyImageSource | None = None,
    inpatient_only: bool = True,
    report: BuildReport | None = None,
) -> list[PatientRecord]:
    """FHIR resources (any mix of patients) -> records, one per inpatient admission.

    Resources that are not JSON objects or lack ``resourceType`` are counted in
    ``report.malformed``. Output is ordered by patient id, then admission time.
    """
    report = report if report is not None else BuildReport()
    by_patient: dict[str, list[Resource]] = defaultdict(list)
    shared: list[Resource] = []
    valid: list[Resource] = []
    for res in resources:
        if not isinstance(res, Mapping) or not isinstance(res.get("resourceType"), str):
            report.malformed += 1
            continue
        report.resources[res["resourceType"]] += 1
        valid.append(res)
    for res in valid:
        pid = patient_id_of(res)
        if pid is not None:
            by_patient[pid].append(res)
        elif res["resourceType"] in _SHARED_TYPES:
            shared.append(res)
        else:
            report.ignored_types[res["resourceType"]] += 1
    records: list[PatientRecord] = []
    for pid in sorted(by_patient):
        report.patients += 1
        recs = build_patient_records(
            pid,
            by_patient[pid],
            prediction_time=prediction_time,
            window_hours=window_hours,
            spec=spec,
            binary_resolver=binary_resolver,
            image_source=image_source,
            shared=shared,
            inpatient_only=inpatient_only,
            report=report,
        )
        records.extend(recs)
    return records
