"""Errors raised while mapping FHIR resources to records.

::

    AdapterError                 (ValueError)
    └── MalformedResourceError   a resource lacks what the mapping needs (no period.start ...)

The record assembler catches these per resource and records a ``QualityNote``; they
never escape ``build_records``. Client errors (HTTP, Bulk Data) live in
``fhir_adapters.client``.
"""

from __future__ import annotations

__all__ = ["AdapterError", "MalformedResourceError"]


class AdapterError(ValueError):
    """Base class for mapping failures."""


class MalformedResourceError(AdapterError):
    """The resource is not usable: ``reason`` is the QualityNote reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
