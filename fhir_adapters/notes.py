"""DocumentReference and DiagnosticReport.presentedForm -> ``Note`` s.

Text comes from an attachment's base64 ``data`` or, failing that, from its ``url``
through a caller-supplied ``BinaryResolver`` (the REST client provides one). The
charset is taken from ``contentType`` (``text/plain; charset=ISO-8859-1``); without
one, UTF-8 is tried and Windows-1252 / Latin-1 is the fallback (the note is kept and
a ``note decoded with fallback charset`` quality note says so -- it is readable, so it
is not "unreadable"). ``text/plain`` is preferred over ``text/html`` /
``application/xhtml+xml`` (the same content types ``record.py`` treats as text, from
``fhir_keys.TEXT_CONTENT_PREFIXES``); (X)HTML is reduced to its text.
De-identification artifacts (MIMIC's ``[** ... **]`` and ``___``) are removed.

Discharge summaries (LOINC 18842-5 and friends, or a type text saying "discharge
summary") are never inputs: they are written once the outcome is known.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from html.parser import HTMLParser
from typing import Any

from fhir_adapters.fhir_keys import (
    ATTACHMENT_HTML,
    ATTACHMENT_PLAIN,
    ATTACHMENT_XHTML,
    IGNORED_STATUSES,
    RT_DIAGNOSTIC_REPORT,
    TEXT_CONTENT_PREFIXES,
)
from fhir_adapters.fhir_time import parse_fhir_input_time
from fhir_adapters.quality import (
    DISCHARGE_SUMMARY,
    IGNORED_STATUS,
    NO_TIME,
    NOTE_FALLBACK_CHARSET,
    NOTE_UNREADABLE,
)
from moe_core.feature_catalog import DISCHARGE_SUMMARY_LOINC
from moe_core.records import Note, QualityNote

__all__ = [
    "NOTE_KINDS",
    "BinaryResolver",
    "NoteResult",
    "clean_note_text",
    "html_to_text",
    "note_from_resource",
]

# (content bytes, contentType or None) for an attachment URL.
BinaryResolver = Callable[[str], tuple[bytes, str | None]]

# LOINC document type -> Note.kind.
NOTE_KINDS: Mapping[str, str] = {
    "18748-4": "radiology",  # Diagnostic imaging study
    "18726-0": "radiology",  # Radiology studies (set)
    "24627-2": "radiology",  # Chest CT
    "36643-5": "radiology",  # Chest X-ray 2 views
    "34746-8": "nursing",  # Nurse note
    "28651-8": "nursing",  # Nurse transfer note
    "11506-3": "progress",  # Progress note
    "34109-9": "other",  # Note
    "11488-4": "consult",  # Consult note
    "34117-2": "physician",  # History and physical note
    "51847-2": "physician",  # Evaluation + Plan note
    "28570-0": "procedure",  # Procedure note
    "34111-5": "emergency",  # Emergency department note
}
_KIND_WORDS = (
    ("radiolog", "radiology"),
    ("nurs", "nursing"),
    ("progress", "progress"),
    ("physician", "physician"),
    ("consult", "consult"),
)
_RADIOLOGY_CATEGORIES = frozenset({"RAD", "radiology", "imaging"})
_DEID = re.compile(r"\[\*\*.*?\*\*\]|_{3,}", re.DOTALL)
_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n\s*\n+")
_BLOCK_TAGS = frozenset(
    {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"}
)
_FALLBACK_CHARSETS = ("cp1252", "latin-1")
_HTML_TYPES = (ATTACHMENT_HTML, ATTACHMENT_XHTML)
_UNUSABLE_RANK = 9


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Visible text of an HTML fragment (scripts/styles dropped, blocks on new lines)."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts)


def clean_note_text(text: str) -> str:
    """Remove de-identification artifacts and collapse runs of blanks."""
    text = _DEID.sub(" ", text)
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


@dataclass(slots=True)
class NoteResult:
    """A note (or ``None``) plus notes on what went wrong, with the note's time."""

    note: Note | None
    quality: list[tuple[datetime | None, QualityNote]]


def _codes(concept: object) -> list[tuple[str, str]]:
    if not isinstance(concept, Mapping):
        return []
    out = []
    for c in concept.get("coding") or ():
        if isinstance(c, Mapping):
            out.append((str(c.get("code") or ""), str(c.get("display") or "")))
    return out


def _concept_words(concept: object) -> str:
    words = [d for _, d in _codes(concept)]
    if isinstance(concept, Mapping) and isinstance(concept.get("text"), str):
        words.append(concept["text"])
    return " ".join(words).lower()


def _charset(content_type: str) -> str | None:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "charset" and value:
            return value.strip().strip('"')
    return None


def _decode(raw: bytes, content_type: str) -> tuple[str, str | None]:
    """(text, fallback): declared charset, else UTF-8, else cp1252 / latin-1.

    ``fallback`` says which fallback charset decoded it (``None`` when the declared
    charset or UTF-8 did): the text is usable but may hold a wrong character or two.
    """
    declared = _charset(content_type)
    if declared:
        try:
            return raw.decode(declared), None
        except (LookupError, UnicodeDecodeError):
            pass
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        pass
    for cs in _FALLBACK_CHARSETS:
        try:
            return raw.decode(cs), f"not {declared or 'UTF-8'}; decoded as {cs}"
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1"), None  # unreachable: latin-1 decodes any bytes


def _media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def _rank(att: Mapping[str, Any]) -> int:
    """0 plain, 1 (X)HTML, 2 other text or untyped, ``_UNUSABLE_RANK`` anything else."""
    ct = _media_type(str(att.get("contentType") or ""))
    if ct == ATTACHMENT_PLAIN:
        return 0
    if ct in _HTML_TYPES:
        return 1
    return 2 if not ct or ct.startswith(TEXT_CONTENT_PREFIXES) else _UNUSABLE_RANK


def _pick_attachment(attachments: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """text/plain first, then (X)HTML, then any other text attachment with content."""
    usable = [
        a for a in attachments if _rank(a) < _UNUSABLE_RANK and (a.get("data") or a.get("url"))
    ]
    return min(usable, key=_rank) if usable else None


@dataclass(frozen=True, slots=True)
class _AttachmentText:
    """An attachment's text, or why there is none, and any charset fallback used."""

    text: str | None
    problem: str | None = None
    fallback: str | None = None


def _attachment_text(att: Mapping[str, Any], resolver: BinaryResolver | None) -> _AttachmentText:
    """The cleaned text of one attachment (base64 ``data``, else ``url`` via the resolver)."""
    content_type = str(att.get("contentType") or ATTACHMENT_PLAIN)
    raw: bytes | None = None
    if isinstance(att.get("data"), str):
        try:
            raw = base64.b64decode(att["data"], validate=False)
        except (binascii.Error, ValueError):
            return _AttachmentText(None, "bad base64")
    elif isinstance(att.get("url"), str):
        if resolver is None:
            return _AttachmentText(None, "attachment url given but no resolver")
        try:
            raw, fetched_type = resolver(att["url"])
        except Exception as exc:
            return _AttachmentText(None, f"url fetch failed: {type(exc).__name__}")
        if fetched_type and not att.get("contentType"):
            content_type = fetched_type
    if raw is None:
        return _AttachmentText(None, "no data")
    text, fallback = _decode(raw, content_type)
    if _media_type(content_type) in _HTML_TYPES:
        text = html_to_text(text)
    return _AttachmentText(clean_note_text(text), fallback=fallback)


def _kind(resource: Mapping[str, Any]) -> str:
    if resource.get("resourceType") == RT_DIAGNOSTIC_REPORT:
        for cat in resource.get("category") or ():
            if any(c in _RADIOLOGY_CATEGORIES for c, _ in _codes(cat)):
                return "radiology"
    concept = resource.get("type") if "type" in resource else resource.get("code")
    for code, _ in _codes(concept):
        if code in NOTE_KINDS:
            return NOTE_KINDS[code]
    words = _concept_words(concept)
    for word, kind in _KIND_WORDS:
        if word in words:
            return kind
    return "other"


def _is_discharge_summary(resource: Mapping[str, Any]) -> bool:
    concept = resource.get("type") if "type" in resource else resource.get("code")
    if any(code in DISCHARGE_SUMMARY_LOINC for code, _ in _codes(concept)):
        return True
    return "discharge summary" in _concept_words(concept)


def _note_time(resource: Mapping[str, Any]) -> datetime | None:
    if resource.get("resourceType") == RT_DIAGNOSTIC_REPORT:
        t = parse_fhir_input_time(resource.get("effectiveDateTime"))
        if t is None and isinstance(resource.get("effectivePeriod"), Mapping):
            t = parse_fhir_input_time(resource["effectivePeriod"].get("start"))
        return t or parse_fhir_input_time(resource.get("issued"))
    context = resource.get("context")
    t = None
    if isinstance(context, Mapping) and isinstance(context.get("period"), Mapping):
        t = parse_fhir_input_time(context["period"].get("start"))
    return t or parse_fhir_input_time(resource.get("date"))


def note_from_resource(
    resource: Mapping[str, Any], resolver: BinaryResolver | None = None
) -> NoteResult:
    """One DocumentReference or DiagnosticReport -> a ``Note`` (or why not)."""
    rtype = resource.get("resourceType", "?")
    source = f"{rtype}/{resource.get('id', '?')}"
    when = _note_time(resource)
    status = resource.get("status")
    if status in IGNORED_STATUSES:
        return NoteResult(None, [(when, QualityNote(source, IGNORED_STATUS, str(status)))])
    if _is_discharge_summary(resource):
        return NoteResult(None, [(when, QualityNote(source, DISCHARGE_SUMMARY))])
    if when is None:
        return NoteResult(None, [(None, QualityNote(source, NO_TIME))])
    if rtype == RT_DIAGNOSTIC_REPORT:
        attachments = [a for a in resource.get("presentedForm") or () if isinstance(a, Mapping)]
    else:
        attachments = [
            c["attachment"]
            for c in resource.get("content") or ()
            if isinstance(c, Mapping) and isinstance(c.get("attachment"), Mapping)
        ]
    att = _pick_attachment(attachments)
    if att is None:
        return NoteResult(
            None, [(when, QualityNote(source, NOTE_UNREADABLE, "no text attachment"))]
        )
    got = _attachment_text(att, resolver)
    quality: list[tuple[datetime | None, QualityNote]] = []
    if got.fallback:
        quality.append((when, QualityNote(source, NOTE_FALLBACK_CHARSET, got.fallback)))
    if not got.text:
        quality.append((when, QualityNote(source, NOTE_UNREADABLE, got.problem or "empty text")))
        return NoteResult(None, quality)
    return NoteResult(Note(time=when, kind=_kind(resource), text=got.text), quality)
