"""The feature spec: what each time-series feature is, wherever it comes from.

One ``FeatureDef`` per feature says which MIMIC-IV itemids and which LOINC codes
mean it, its canonical UCUM unit, how other units convert to it and what range is
plausible. ``FeatureSpec`` bundles the features with the static categorical
vocabularies and a ``version``; checkpoints record the version and refuse a
mismatched spec. The filled, default spec lives in ``moe_core.feature_catalog``.

Normalisation statistics (``NormStats``) are fitted on the training split only and
travel with the checkpoint, not with the spec.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from moe_core.records import UNKNOWN

__all__ = [
    "FeatureDef",
    "FeatureSpec",
    "NormStats",
    "UnitConversion",
    "normalise_unit",
]


def normalise_unit(unit: str | None) -> str:
    """Canonical spelling for unit matching: strip, drop braces/brackets, lower case.

    ``"[degF]"``, ``"degF"``, ``"°F"`` and ``"DEG F"`` all become ``"degf"``.
    """
    if not unit:
        return ""
    u = unit.strip().lower().replace("°", "deg").replace(" ", "")
    for ch in "[]{}":
        u = u.replace(ch, "")
    return u


@dataclass(frozen=True, slots=True)
class UnitConversion:
    """``canonical = value * scale + offset`` for values recorded in any of ``units``."""

    units: tuple[str, ...]
    scale: float
    offset: float = 0.0

    def __post_init__(self) -> None:
        if not self.units:
            raise ValueError("UnitConversion needs at least one unit")
        if not math.isfinite(self.scale) or self.scale == 0:
            raise ValueError(f"UnitConversion scale must be finite and non-zero, got {self.scale}")


@dataclass(frozen=True, slots=True)
class FeatureDef:
    """One hourly time-series feature."""

    code: str  # stable key used in Event.code and tensors, e.g. "heart_rate"
    name: str  # human name, e.g. "Heart rate"
    unit: str  # canonical UCUM unit, e.g. "/min"
    loinc: tuple[str, ...]  # every LOINC code that means this feature
    itemids: tuple[int, ...]  # MIMIC-IV chartevents/labevents itemids
    plausible: tuple[float, float]  # inclusive range in the canonical unit
    conversions: tuple[UnitConversion, ...] = ()
    # For coded answers (GCS, capillary refill): answer code or display text -> value.
    answers: Mapping[str, float] = field(default_factory=dict)
    # Extra unit spellings accepted as the canonical unit itself (e.g. "bpm" for "/min").
    aliases: tuple[str, ...] = ()
    # Unit an itemid is recorded in when its row leaves the unit blank
    # (MIMIC-IV 226531 "Admission Weight (lbs.)" has no valueuom but is in pounds).
    itemid_units: Mapping[int, str] = field(default_factory=dict)
    # For 0/1 flags measured as a quantity: (unit, threshold) -> 1.0 when value > threshold.
    # Capillary refill is a flag (abnormal > 3 s) but LOINC 44963-7 reports seconds.
    flag_above: tuple[str, float] | None = None

    def __post_init__(self) -> None:
        lo, hi = self.plausible
        if not lo < hi:
            raise ValueError(
                f"{self.code}: plausible range must have lo < hi, got {self.plausible}"
            )
        if not self.code.isidentifier():
            raise ValueError(f"{self.code!r} is not a valid feature code")

    def to_canonical(self, value: float, unit: str | None) -> float | None:
        """Convert ``value`` recorded in ``unit`` to the canonical unit; ``None`` if unknown unit.

        An empty unit is taken as the canonical unit (MIMIC often leaves it blank).
        """
        u = normalise_unit(unit)
        if self.flag_above is not None and u and u == normalise_unit(self.flag_above[0]):
            return 1.0 if float(value) > self.flag_above[1] else 0.0
        if (
            u == ""
            or u == normalise_unit(self.unit)
            or u in {normalise_unit(a) for a in self.aliases}
        ):
            return float(value)
        for conv in self.conversions:
            if u in {normalise_unit(x) for x in conv.units}:
                return float(value) * conv.scale + conv.offset
        return None

    def unit_for_itemid(self, itemid: int, unit: str | None) -> str | None:
        """The unit of a MIMIC row: its own ``unit`` if given, else the itemid's known unit."""
        if unit:
            return unit
        return self.itemid_units.get(itemid, unit)

    def is_plausible(self, value: float) -> bool:
        lo, hi = self.plausible
        return math.isfinite(value) and lo <= value <= hi


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """The versioned set of features and static vocabularies a model is trained with."""

    version: str
    features: tuple[FeatureDef, ...]
    # Static categorical vocabularies; index 0 of each is always UNKNOWN.
    static_categories: Mapping[str, tuple[str, ...]]

    def __post_init__(self) -> None:
        codes = [f.code for f in self.features]
        if len(set(codes)) != len(codes):
            raise ValueError(f"duplicate feature codes in spec {self.version}: {codes}")
        for name, vocab in self.static_categories.items():
            if not vocab or vocab[0] != UNKNOWN:
                raise ValueError(f"static vocabulary {name!r} must start with {UNKNOWN!r}")
        seen: dict[str, str] = {}
        for f in self.features:
            for code in f.loinc:
                if code in seen:
                    raise ValueError(f"LOINC {code} maps to both {seen[code]} and {f.code}")
                seen[code] = f.code

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(f.code for f in self.features)

    def index(self) -> dict[str, int]:
        """Feature code -> column in the (T, F) tensors."""
        return {f.code: i for i, f in enumerate(self.features)}

    def by_code(self) -> dict[str, FeatureDef]:
        return {f.code: f for f in self.features}

    def by_loinc(self) -> dict[str, FeatureDef]:
        return {code: f for f in self.features for code in f.loinc}

    def by_itemid(self) -> dict[int, FeatureDef]:
        return {i: f for f in self.features for i in f.itemids}

    def category_id(self, name: str, value: str | None) -> int:
        """Index of ``value`` in the vocabulary ``name``; 0 (unknown) when absent."""
        vocab = self.static_categories[name]
        v = (value or UNKNOWN).strip().lower()
        try:
            return vocab.index(v)
        except ValueError:
            return 0


@dataclass(frozen=True, slots=True)
class NormStats:
    """Per-feature mean/std in canonical units, fitted on the training split only."""

    spec_version: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    age_mean: float = 65.0
    age_std: float = 17.0

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} entries, std has {len(self.std)}")
        if any(not (s > 0) for s in self.std) or not self.age_std > 0:
            raise ValueError("standard deviations must be positive")

    @classmethod
    def fit(
        cls,
        spec: FeatureSpec,
        values: Mapping[str, Iterable[float]],
        ages: Iterable[float],
    ) -> NormStats:
        """Fit from canonical values per feature code (training split only).

        Features never observed get mean 0 / std 1 so they pass through unchanged.
        """
        means: list[float] = []
        stds: list[float] = []
        for f in spec.features:
            xs = [float(v) for v in values.get(f.code, ())]
            if xs:
                m = math.fsum(xs) / len(xs)
                var = math.fsum((x - m) ** 2 for x in xs) / len(xs)
                means.append(m)
                stds.append(math.sqrt(var) if var > 1e-12 else 1.0)
            else:
                means.append(0.0)
                stds.append(1.0)
        age_list = [float(a) for a in ages]
        age_mean, age_std = 65.0, 17.0
        if age_list:
            age_mean = math.fsum(age_list) / len(age_list)
            var = math.fsum((a - age_mean) ** 2 for a in age_list) / len(age_list)
            age_std = math.sqrt(var) if var > 1e-12 else 1.0
        return cls(spec.version, tuple(means), tuple(stds), age_mean, age_std)

    @classmethod
    def identity(cls, spec: FeatureSpec) -> NormStats:
        n = spec.n_features
        return cls(spec.version, (0.0,) * n, (1.0,) * n)

    def to_dict(self) -> dict[str, object]:
        return {
            "spec_version": self.spec_version,
            "mean": list(self.mean),
            "std": list(self.std),
            "age_mean": self.age_mean,
            "age_std": self.age_std,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> NormStats:
        mean = d["mean"]
        std = d["std"]
        assert isinstance(mean, list) and isinstance(std, list)
        return cls(
            spec_version=str(d["spec_version"]),
            mean=tuple(float(x) for x in mean),
            std=tuple(float(x) for x in std),
            age_mean=float(d.get("age_mean", 65.0)),  # type: ignore[arg-type]
            age_std=float(d.get("age_std", 17.0)),  # type: ignore[arg-type]
        )
