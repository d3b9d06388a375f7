"""Structured JSON logs, one object per line, never with patient identifiers.

Call sites log an event name and fields (``log.info("prediction", extra={"fields": {...}})``);
patient and encounter ids only ever appear as HMAC pseudonyms (``cds_hooks.privacy``).
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = [
    "AUTH_OFF_MESSAGE",
    "JsonFormatter",
    "configure_logging",
    "log_auth_disabled",
    "log_event",
]

LOGGER_NAME = "moe_health.cds"
AUTH_OFF_MESSAGE = (
    "WARNING: client authentication is OFF: any caller can request predictions. "
    "Local demos only, never with real patient data."
)


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "event", ...fields}`` as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            payload.update(fields)
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()


def configure_logging(level: str = "INFO", *, json_lines: bool = True) -> None:
    """Send the service's logs to stderr, as JSON lines unless ``json_lines`` is off."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level.upper())
    if not any(getattr(h, "_moe_health", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler._moe_health = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    plain = logging.Formatter("%(levelname)s %(message)s")
    for h in logger.handlers:
        h.setFormatter(JsonFormatter() if json_lines else plain)
    logger.propagate = True


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``event`` with structured ``fields`` on the service logger."""
    logging.getLogger(LOGGER_NAME).log(level, event, extra={"fields": fields})


def log_auth_disabled(**fields: Any) -> None:
    """The loud ``auth_disabled`` warning, framed by rules so it stands out in the log
    (``serve`` logs it with its host; every app logs it again at startup)."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.warning("*" * 72)
    log_event("auth_disabled", logging.WARNING, message=AUTH_OFF_MESSAGE, **fields)
    logger.warning("*" * 72)
