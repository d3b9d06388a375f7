"""FHIR references -> the logical id they point at."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhir_adapters.fhir_keys import PATIENT_COMPARTMENT_REFS

__all__ = ["patient_id_of", "reference_id"]

_URN_PREFIXES = ("urn:uuid:", "urn:oid:")


def reference_id(ref: object) -> str | None:
    """``{"reference": "Patient/123"}`` (or ``urn:uuid:123``, or an absolute URL) -> ``"123"``.

    ``_history/N`` suffixes are dropped. ``None`` when there is no usable reference.
    """
    if isinstance(ref, dict):
        ref = ref.get("reference")
    if not isinstance(ref, str) or not ref:
        return None
    for prefix in _URN_PREFIXES:
        if ref.startswith(prefix):
            return ref[len(prefix) :] or None
    parts = [p for p in ref.split("?", 1)[0].split("/") if p]
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    return parts[-1] if parts else None


def patient_id_of(resource: Mapping[str, Any]) -> str | None:
    """The patient a resource belongs to: its own id for a Patient, else subject/patient."""
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) and rid else None
    for key in PATIENT_COMPARTMENT_REFS:
        rid = reference_id(resource.get(key))
        if rid:
            return rid
    return None
