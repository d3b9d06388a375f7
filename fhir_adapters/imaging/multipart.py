"""Split a ``multipart/related`` WADO-RS body into its parts (PS3.18 8.6.1.2).

The byte-level parsing is python-multipart's streaming ``MultipartParser`` (the parser
behind Starlette's form handling): it finds boundaries in binary bodies without
line-ending or charset assumptions, which the stdlib ``email`` parser does not promise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import Message

from python_multipart.multipart import MultipartParser

from fhir_adapters.imaging.errors import ImageRetrievalError

__all__ = ["BodyPart", "boundary_of", "split_multipart"]


@dataclass(slots=True)
class BodyPart:
    """One part: its headers (lower-case names) and its bytes."""

    headers: dict[str, str] = field(default_factory=dict)
    content: bytearray = field(default_factory=bytearray)

    @property
    def content_type(self) -> str:
        """The part's media type without parameters, lower case ("" when absent)."""
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


def _parameters(content_type: str) -> Message:
    message = Message()
    message["content-type"] = content_type
    return message


def boundary_of(content_type: str) -> str:
    """The ``boundary`` parameter of a multipart Content-Type (quoted or not)."""
    message = _parameters(content_type)
    if message.get_content_maintype() != "multipart":
        raise ImageRetrievalError(f"expected a multipart response, got {content_type!r}")
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise ImageRetrievalError(f"multipart response without boundary: {content_type!r}")
    return boundary


def split_multipart(body: bytes, content_type: str) -> list[BodyPart]:
    """The parts of a multipart body; ``ImageRetrievalError`` when it is malformed."""
    boundary = boundary_of(content_type)
    parts: list[BodyPart] = []
    name = bytearray()
    value = bytearray()
    finished = False

    def on_part_begin() -> None:
        parts.append(BodyPart())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        value.extend(data[start:end])

    def on_header_end() -> None:
        parts[-1].headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
        name.clear()
        value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].content.extend(data[start:end])

    def on_end() -> None:
        nonlocal finished
        finished = True

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_end": on_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except Exception as exc:  # python-multipart raises its own MultipartParseError
        raise ImageRetrievalError(f"malformed multipart body: {exc}") from exc
    if not finished:
        raise ImageRetrievalError("multipart body ends before its closing boundary")
    return parts
