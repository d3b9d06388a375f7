"""What a chest X-ray's DICOM header says: identifiers, view position and time.

Works on any ``pydicom.Dataset``: one read from a file (pixels not needed) or one
built from DICOMweb metadata (DICOM JSON), so instance selection never needs pixels.

View position, first attribute that names one wins:

1. ViewPosition (0018,5101), upper-cased ("AP", "PA", "LL", "LATERAL", ...);
2. ViewCodeSequence (0054,0220): code value or meaning from PS3.16 CID 4010;
3. whole-word tokens ("AP", "PA", "LAT", "LATERAL", "LL", "RL") in the free-text
   attributes that sites use as projection labels: ViewName, SeriesDescription,
   ProtocolName, AcquisitionDeviceProcessingDescription, StudyDescription, in that
   order (DICOM has no "ProjectionLabel" keyword).

ImageLaterality (0020,0062) is read but never used as a view: it names the body
side (L/R/B/U), not the projection. Nothing found -> ``VIEW_UNKNOWN``.

Time, first complete attribute wins: AcquisitionDateTime, AcquisitionDate +
AcquisitionTime, ContentDate + ContentTime, SeriesDate + SeriesTime, StudyDate +
StudyTime. DICOM times carry no zone unless TimezoneOffsetFromUTC (0008,0201) or a
DT offset says so; without one they are read as UTC. A date without a time is
placed at the END of that day, so an image is never used before it could exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone

from pydicom.dataset import Dataset
from pydicom.valuerep import DA, DT, TM

from fhir_adapters.imaging.dicom_keys import VIEW_CODE_MEANINGS, VIEW_TEXT_TOKENS, VIEW_UNKNOWN

__all__ = ["HEADER_KEYWORDS", "DicomHeader", "dicom_time", "read_header", "view_position"]

_TEXT_VIEW_ATTRIBUTES = (
    "ViewName",
    "SeriesDescription",
    "ProtocolName",
    "AcquisitionDeviceProcessingDescription",
    "StudyDescription",
)
_DATE_TIME_PAIRS = (
    ("AcquisitionDate", "AcquisitionTime"),
    ("ContentDate", "ContentTime"),
    ("SeriesDate", "SeriesTime"),
    ("StudyDate", "StudyTime"),
)
_WORD = re.compile(r"[A-Z]+")
# Every attribute read_header looks at: DICOMweb metadata is trimmed to these.
HEADER_KEYWORDS: tuple[str, ...] = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "Modality",
    "ImageLaterality",
    "NumberOfFrames",
    "ViewPosition",
    "ViewCodeSequence",
    *_TEXT_VIEW_ATTRIBUTES,
    "AcquisitionDateTime",
    *(k for pair in _DATE_TIME_PAIRS for k in pair),
    "TimezoneOffsetFromUTC",
)


@dataclass(frozen=True, slots=True)
class DicomHeader:
    """The header fields the image path needs. UIDs are ``""`` when absent."""

    study_uid: str
    series_uid: str
    sop_uid: str
    view_position: str  # upper case, VIEW_UNKNOWN when nothing names it
    view_source: str  # the attribute the view came from ("" when unknown)
    acquired_at: datetime | None  # timezone-aware UTC
    modality: str = ""
    image_laterality: str = ""
    frames: int = 1


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    return str(value).strip()


def view_position(ds: Dataset) -> tuple[str, str]:
    """``(view, attribute it came from)``; ``(VIEW_UNKNOWN, "")`` when nothing says."""
    direct = _text(ds, "ViewPosition").upper()
    if direct:
        return direct, "ViewPosition"
    for item in ds.get("ViewCodeSequence") or []:
        for key in (_text(item, "CodeValue"), _text(item, "CodeMeaning").lower()):
            if key in VIEW_CODE_MEANINGS:
                return VIEW_CODE_MEANINGS[key], "ViewCodeSequence"
    for keyword in _TEXT_VIEW_ATTRIBUTES:
        words = _WORD.findall(_text(ds, keyword).upper())
        for word in words:
            if word in VIEW_TEXT_TOKENS:
                return VIEW_TEXT_TOKENS[word], keyword
    return VIEW_UNKNOWN, ""


def _zone(ds: Dataset) -> timezone:
    offset = _text(ds, "TimezoneOffsetFromUTC")
    match = re.fullmatch(r"([+-])(\d{2})(\d{2})", offset)
    if not match:
        return UTC
    sign = -1 if match.group(1) == "-" else 1
    delta = timedelta(hours=int(match.group(2)), minutes=int(match.group(3)))
    return timezone(sign * delta)


def _as_utc(moment: datetime, zone: timezone) -> datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


def dicom_time(ds: Dataset) -> datetime | None:
    """When the image was taken (UTC), or ``None`` if no date attribute parses."""
    zone = _zone(ds)
    stamp = _text(ds, "AcquisitionDateTime")
    if stamp:
        try:
            parsed = DT(stamp)
        except ValueError:
            parsed = None
        if parsed is not None:
            moment = datetime(
                parsed.year,
                parsed.month,
                parsed.day,
                parsed.hour,
                parsed.minute,
                parsed.second,
                parsed.microsecond,
                tzinfo=parsed.tzinfo,
            )
            return _as_utc(moment, zone)
    for date_key, time_key in _DATE_TIME_PAIRS:
        day_text = _text(ds, date_key)
        if not day_text:
            continue
        try:
            day: date | None = DA(day_text)
        except ValueError:
            day = None
        if day is None:
            continue
        clock: time | None
        try:
            clock = TM(_text(ds, time_key)) if _text(ds, time_key) else None
        except ValueError:
            clock = None
        if clock is None:  # end of day: never earlier than the image could exist
            clock = time(23, 59, 59, 999999)
        moment = datetime.combine(
            day, time(clock.hour, clock.minute, clock.second, clock.microsecond)
        )
        return _as_utc(moment, zone)
    return None


def read_header(ds: Dataset) -> DicomHeader:
    """Identifiers, view and time from a dataset (pixels are not touched)."""
    view, source = view_position(ds)
    frames_text = _text(ds, "NumberOfFrames")
    frames = int(frames_text) if frames_text.isdigit() and int(frames_text) > 0 else 1
    return DicomHeader(
        study_uid=_text(ds, "StudyInstanceUID"),
        series_uid=_text(ds, "SeriesInstanceUID"),
        sop_uid=_text(ds, "SOPInstanceUID"),
        view_position=view,
        view_source=source,
        acquired_at=dicom_time(ds),
        modality=_text(ds, "Modality").upper(),
        image_laterality=_text(ds, "ImageLaterality").upper(),
        frames=frames,
    )
