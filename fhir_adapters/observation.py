"""Observation -> ``Event`` s in canonical units, and what was dropped and why.

Declarative: the ``FeatureSpec`` says which codes mean which feature; this module only
walks the resource. ``value[x]`` and ``effective[x]`` are tried in a fixed order:

* time: ``effectiveDateTime``, ``effectivePeriod.start`` (else ``.end``),
  ``effectiveInstant``, then ``issued`` as the last resort; a bare date counts as the
  end of its day (``fhir_time.parse_fhir_input_time``);
* known at: ``issued`` when given (a lab drawn before the prediction time but resulted
  after it is not an input then); kept beside each event in ``ObservationResult.known``
  for the record assembler;
* value: ``valueQuantity`` (UCUM ``code`` preferred over ``unit``),
  ``valueCodeableConcept`` (answer codes, then display/text, via ``FeatureDef.answers``),
  ``valueInteger``, ``valueString``.

Codes: LOINC codings (system ``http://loinc.org`` or no system) and MIMIC-IV itemid
codings (any system URL containing ``mimic``). Panels (blood pressure 85354-9 / 55284-4)
contribute through their ``component`` s; components are read for any Observation.

``valueString`` rule: a plain number (``"7.2"``) is a value in the canonical unit; an
answer text (``"To Speech"``) goes through ``answers``; a censored value (``"<5"``,
``">= 200"``, or a ``valueQuantity`` with a ``comparator``) is a bound, not a
measurement, so it is dropped with reason ``censored value`` rather than guessed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fhir_adapters.fhir_keys import IGNORED_STATUSES, LOINC_SYSTEM, MIMIC_ITEMID_SYSTEM_MARK
from fhir_adapters.fhir_time import parse_fhir_input_time
from fhir_adapters.quality import (
    BAD_UNIT,
    BAD_VALUE,
    CENSORED_VALUE,
    IGNORED_STATUS,
    NO_TIME,
    NO_VALUE,
    OUT_OF_RANGE,
)
from moe_core.feature_catalog import BP_PANEL_LOINC, answer_value
from moe_core.feature_spec import FeatureDef, FeatureSpec
from moe_core.records import Event, QualityNote

__all__ = ["ObservationIndex", "ObservationResult", "TimedNote", "observation_events"]

TimedNote = tuple[datetime | None, QualityNote]
_CENSOR_PREFIXES = ("<=", ">=", "<", ">")


@dataclass(slots=True)
class ObservationIndex:
    """Lookup tables for one spec, built once: code -> feature, unit -> conversion."""

    spec: FeatureSpec
    by_loinc: dict[str, FeatureDef] = field(init=False)
    by_itemid: dict[str, FeatureDef] = field(init=False)
    panels: frozenset[str] = frozenset(BP_PANEL_LOINC)
    _linear: dict[tuple[str, str], tuple[float, float] | None] = field(
        init=False, default_factory=dict
    )
    # feature code -> converted directly (a flag, or a non-affine ``to_canonical``)
    _direct: dict[str, bool] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.by_loinc = self.spec.by_loinc()
        self.by_itemid = {str(i): f for i, f in self.spec.by_itemid().items()}

    def feature_for(self, concept: object) -> tuple[FeatureDef | None, str | None, str | None]:
        """(feature, matched itemid or None, first code seen) for a CodeableConcept."""
        first: str | None = None
        if not isinstance(concept, dict):
            return None, None, None
        for coding in concept.get("coding") or ():
            if not isinstance(coding, dict):
                continue
            code = coding.get("code")
            if not isinstance(code, str):
                continue
            first = first or code
            system = coding.get("system")
            if system is None or system == LOINC_SYSTEM:
                f = self.by_loinc.get(code)
                if f is not None:
                    return f, None, code
            elif isinstance(system, str) and MIMIC_ITEMID_SYSTEM_MARK in system:
                f = self.by_itemid.get(code)
                if f is not None:
                    return f, code, code
        return None, None, first

    def convert(self, feature: FeatureDef, value: float, unit: str | None) -> float | None:
        """``value`` in ``unit`` -> canonical unit (memoised per unit spelling).

        The memo assumes the stock affine ``FeatureDef.to_canonical``; flags and
        features that override it (FiO2 fraction-or-percent) are converted directly.
        """
        direct = self._direct.get(feature.code)
        if direct is None:
            direct = feature.flag_above is not None or not _is_affine(feature)
            self._direct[feature.code] = direct
        if direct:
            return feature.to_canonical(value, unit)
        key = (feature.code, unit or "")
        lin = self._linear.get(key, ...)
        if lin is ...:
            zero = feature.to_canonical(0.0, unit)
            one = feature.to_canonical(1.0, unit)
            lin = None if zero is None or one is None else (one - zero, zero)
            self._linear[key] = lin
        if lin is None:
            return None
        return value * lin[0] + lin[1]


def _is_affine(feature: FeatureDef) -> bool:
    return type(feature).to_canonical is FeatureDef.to_canonical


@dataclass(slots=True)
class ObservationResult:
    """Accumulates events and notes over many Observations of one patient."""

    events: list[Event] = field(default_factory=list)
    known: list[datetime | None] = field(default_factory=list)  # per event: when resulted
    notes: list[TimedNote] = field(default_factory=list)
    unknown_codes: Counter[str] = field(default_factory=Counter)


def _time(obs: Mapping[str, Any]) -> datetime | None:
    """When the value was measured; a bare date counts as the end of that day (no leak)."""
    t = parse_fhir_input_time(obs.get("effectiveDateTime"))
    if t is None and isinstance(obs.get("effectivePeriod"), dict):
        period = obs["effectivePeriod"]
        t = parse_fhir_input_time(period.get("start")) or parse_fhir_input_time(period.get("end"))
    if t is None:
        t = parse_fhir_input_time(obs.get("effectiveInstant"))
    if t is None:
        t = parse_fhir_input_time(obs.get("issued"))
    return t


def _known(obs: Mapping[str, Any]) -> datetime | None:
    """When the result became available (``issued``), if the resource says."""
    return parse_fhir_input_time(obs.get("issued"))


def _raw_value(
    item: Mapping[str, Any], feature: FeatureDef
) -> tuple[float | None, str | None, str | None]:
    """(value, unit, problem reason) of an Observation or component; value in its unit."""
    q = item.get("valueQuantity")
    if isinstance(q, dict):
        if q.get("comparator"):
            return None, None, CENSORED_VALUE
        v = q.get("value")
        if isinstance(v, bool) or not isinstance(v, int | float):
            return None, None, NO_VALUE
        unit = q.get("code") or q.get("unit")
        return float(v), unit if isinstance(unit, str) else None, None
    cc = item.get("valueCodeableConcept")
    if isinstance(cc, dict):
        for coding in cc.get("coding") or ():
            if isinstance(coding, dict):
                for key in ("code", "display"):
                    got = answer_value(feature, coding.get(key))
                    if got is not None:
                        return got, feature.unit, None
        got = answer_value(feature, cc.get("text"))
        return (got, feature.unit, None) if got is not None else (None, None, BAD_VALUE)
    iv = item.get("valueInteger")
    if isinstance(iv, int) and not isinstance(iv, bool):
        return float(iv), None, None
    sv = item.get("valueString")
    if isinstance(sv, str):
        s = sv.strip()
        if s.startswith(_CENSOR_PREFIXES):
            return None, None, CENSORED_VALUE
        try:
            return float(s), None, None
        except ValueError:
            got = answer_value(feature, s)
            return (got, feature.unit, None) if got is not None else (None, None, BAD_VALUE)
    return None, None, NO_VALUE


def _source(obs: Mapping[str, Any]) -> str:
    """The ``QualityNote.source`` of an Observation (built only when a note is written)."""
    return f"Observation/{obs.get('id', '?')}"


def _one(
    item: Mapping[str, Any],
    feature: FeatureDef,
    itemid: str | None,
    when: tuple[datetime, datetime | None],
    obs: Mapping[str, Any],
    index: ObservationIndex,
    out: ObservationResult,
) -> None:
    """One value (of Observation ``obs`` or a component) at ``when`` = (time, known at)."""
    at, known = when
    value, unit, problem = _raw_value(item, feature)
    if value is None:
        out.notes.append((at, QualityNote(_source(obs), problem or NO_VALUE, feature.code)))
        return
    if not unit and itemid is not None:
        unit = feature.itemid_units.get(int(itemid), unit)
    canonical = index.convert(feature, value, unit)
    if canonical is None:
        out.notes.append((at, QualityNote(_source(obs), BAD_UNIT, f"{feature.code}: {unit}")))
        return
    if not feature.is_plausible(canonical):
        detail = f"{feature.code}={canonical:g} {feature.unit}"
        out.notes.append((at, QualityNote(_source(obs), OUT_OF_RANGE, detail)))
        return
    out.events.append(Event(at, feature.code, canonical))
    out.known.append(known)


def observation_events(
    obs: Mapping[str, Any], index: ObservationIndex, out: ObservationResult
) -> None:
    """Append the events of one Observation (and its drops) to ``out``. Never raises
    for a malformed resource: missing parts become quality notes."""
    status = obs.get("status")
    if status in IGNORED_STATUSES:
        out.notes.append((_time(obs), QualityNote(_source(obs), IGNORED_STATUS, str(status))))
        return
    feature, itemid, first_code = index.feature_for(obs.get("code"))
    components = obs.get("component")
    has_components = isinstance(components, list) and bool(components)
    if feature is None and not has_components:
        if first_code is None or first_code not in index.panels:
            out.unknown_codes[first_code or "<no code>"] += 1
        return
    at = _time(obs)
    if at is None:
        out.notes.append((None, QualityNote(_source(obs), NO_TIME, first_code or "")))
        return
    when = (at, _known(obs))
    if feature is not None and (not has_components or _has_value(obs)):
        _one(obs, feature, itemid, when, obs, index, out)
    if has_components:
        assert isinstance(components, list)
        for comp in components:
            if not isinstance(comp, dict):
                continue
            cf, citem, ccode = index.feature_for(comp.get("code"))
            if cf is None:
                out.unknown_codes[ccode or "<no code>"] += 1
                continue
            _one(comp, cf, citem, when, obs, index, out)


def _has_value(item: Mapping[str, Any]) -> bool:
    return any(k.startswith("value") for k in item)
