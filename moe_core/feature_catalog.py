"""The default feature spec: every time-series feature, its codes, units and ranges.

The 17 clinical variables of Harutyunyan et al. (2019) / MedFuse plus the core labs, and
(spec 2) the blood gases, liver panel, magnesium and troponin T that the PhysioNet/CinC
2012 mortality set carries and MIMIC-IV labs have too.
Each feature lists

* MIMIC-IV itemids: ``icu/chartevents`` (22xxxx) and ``hosp/labevents`` (5xxxx), each
  checked against ``d_items`` / ``d_labitems`` of MIMIC-IV v2.2 and seen in the demo;
* every LOINC code that means it (serum/plasma, whole-blood, arterial and panel
  component codes differ: glucose 2345-7 serum vs 2339-0 blood vs 41653-7 glucometer);
  itemid <-> LOINC follows MIT-LCP/mimic-code ``mimic-iv/mapping/``;
* per itemid, the LOINC code that itemid means when it is not the feature's first
  (``ITEMID_LOINC``, read through ``loinc_for_itemid``): blood-gas / whole-blood labs
  (50809 glucose -> 2339-0, 50824 sodium -> 2947-0, ...) and non-invasive blood pressure
  (220179 -> 76534-7, ...) are not the serum / invasive codes. Chart items follow
  ``mimic-iv/mapping/meas_chartevents_main.csv``; lab items the LOINC whose specimen
  (blood vs serum/plasma) and method match ``d_labitems`` fluid/category;
* the canonical UCUM unit, conversions from other units and a plausible range
  (values outside it are physiologically impossible or charting errors).

Value rules beyond unit conversion, shared by every source:

* **FiO2 as a fraction.** FiO2 is charted both as a percentage (21-100) and as a
  fraction (0.21-1.0), often with no unit or unit ``"1"``. A value in (0, 1] can only be
  a fraction (1 % oxygen is not breathable), so it is multiplied by 100 whatever the
  unit says (``_FractionOrPercentDef``). Larger values with a fraction unit stay
  implausible and are dropped.
* **GCS total.** MIMIC-IV charts only the three GCS parts (no total itemid) while a
  FHIR feed may send LOINC 9269-2. ``gcs_total`` is therefore derived as eye + motor +
  verbal wherever the three were charted at the same instant and no total was charted
  then: ``moe_core.records.derive_gcs_totals``, run when any ``PatientRecord`` is built,
  so the MIMIC and FHIR paths (and every other source) fill it alike.

Static categorical vocabularies (sex, race as the US Core / OMB categories, ethnicity,
admission type) and the text/code -> category maps live here too, so the MIMIC path and
the FHIR path map demographics identically. Bump ``SPEC_VERSION`` whenever the feature
list, order, units or vocabularies change: checkpoints refuse a mismatched spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from moe_core.feature_spec import FeatureDef, FeatureSpec, UnitConversion, normalise_unit
from moe_core.records import UNKNOWN

__all__ = [
    "ADMISSION_TYPES",
    "BP_PANEL_LOINC",
    "DEFAULT_SPEC",
    "DISCHARGE_SUMMARY_LOINC",
    "ETHNICITIES",
    "ETHNICITY_OMB_CODES",
    "FEATURES",
    "ITEMID_LOINC",
    "RACES",
    "RACE_OMB_CODES",
    "SEXES",
    "SPEC_VERSION",
    "STATIC_CATEGORIES",
    "admission_type_category",
    "answer_value",
    "ethnicity_category",
    "loinc_for_itemid",
    "race_category",
    "sex_category",
]

SPEC_VERSION = "moe-health-spec-2"

# Panels whose components carry features (blood pressure arrives as components).
BP_PANEL_LOINC = ("85354-9", "55284-4", "35094-2")
# LOINC document types that are discharge summaries: never a model input.
DISCHARGE_SUMMARY_LOINC = ("18842-5", "11490-0", "28655-9", "34105-7")

_MMHG = ("mmHg", "mm Hg", "mm[Hg]")
_PER_MIN = ("bpm", "beats/min", "{beats}/min", "/min", "1/min", "min-1")
_BREATHS = ("insp/min", "breaths/min", "{breaths}/min", "{Breaths}/min", "bpm")
_MEQ = ("mEq/L", "meq/L", "mmol/l")
_THOUSAND_PER_UL = ("K/uL", "10^3/uL", "x10E3/uL", "10*9/L", "10^9/L", "/nL", "k/ul")
_LB_TO_KG = 0.45359237
_OZ_TO_KG = 0.028349523125
_IN_TO_CM = 2.54
_F_SCALE = 5.0 / 9.0
_GLUCOSE_MG_PER_MMOL = 18.016  # molar mass 180.16 g/mol
_CREATININE_UMOL_PER_MG = 88.42  # molar mass 113.12 g/mol
_UREA_N_MG_PER_MMOL = 2.8014  # two nitrogens, 28.014 g/mol
_BILIRUBIN_UMOL_PER_MG = 17.104  # molar mass 584.66 g/mol
_LACTATE_MG_PER_MMOL = 9.008  # molar mass 90.08 g/mol
_HB_G_PER_MMOL = 1.6114  # monomer (Fe) basis, 16.114 g/mmol -> g/dL per mmol/L
_MMHG_PER_KPA = 7.50062
_U_PER_UKAT = 60.0  # 1 µkat = 1 µmol/s = 60 µmol/min = 60 U
_MG_MG_PER_MMOL = 2.4305  # molar mass 24.305 g/mol; divalent, so 1 mEq = 0.5 mmol
_ENZYME_UNITS = ("IU/L", "[IU]/L", "U/l", "units/L", "unit/L")

# GCS answers: LOINC answer codes (LL for 9267-6 / 9270-0 / 9268-4), their display text,
# and MIMIC-IV chartevents text values, all lower-case.
_GCS_EYE = {
    "la6553-7": 1.0, "no eye opening": 1.0, "none": 1.0, "no response": 1.0,
    "la6554-5": 2.0, "eye opening to pain": 2.0, "to pain": 2.0,
    "la6555-2": 3.0, "eye opening to verbal command": 3.0, "to speech": 3.0,
    "la6556-0": 4.0, "eyes open spontaneously": 4.0, "spontaneously": 4.0,
}  # fmt: skip
_GCS_VERBAL = {
    "la6557-8": 1.0, "no verbal response": 1.0, "no response": 1.0, "no response-ett": 1.0,
    "la6558-6": 2.0, "incomprehensible sounds": 2.0, "incomprehensible sound": 2.0,
    "la6559-4": 3.0, "inappropriate words": 3.0,
    "la6560-2": 4.0, "confused": 4.0,
    "la6561-0": 5.0, "oriented": 5.0,
}  # fmt: skip
_GCS_MOTOR = {
    "la6562-8": 1.0, "no motor response": 1.0, "no response": 1.0,
    "la6563-6": 2.0, "extension to pain": 2.0, "abnormal extension": 2.0,
    "la6564-4": 3.0, "flexion to pain": 3.0, "abnormal flexion": 3.0,
    "la6565-1": 4.0, "withdrawl from pain": 4.0, "withdrawal from pain": 4.0,
    "flex-withdraws": 4.0,
    "la6566-9": 5.0, "localizing pain": 5.0, "localizes pain": 5.0,
    "la6567-7": 6.0, "obeys commands": 6.0,
}  # fmt: skip
# Capillary refill as a flag (Harutyunyan): 0 = normal (< 3 s), 1 = abnormal (> 3 s).
_CAP_REFILL = {
    "normal <3 secs": 0.0, "normal <3 seconds": 0.0, "normal": 0.0, "brisk": 0.0,
    "< 3 seconds": 0.0, "<3 seconds": 0.0,
    "abnormal >3 secs": 1.0, "abnormal >3 seconds": 1.0, "abnormal": 1.0,
    "delayed": 1.0, "sluggish": 1.0, "> 3 seconds": 1.0, ">3 seconds": 1.0,
}  # fmt: skip


class _FractionOrPercentDef(FeatureDef):
    """A percentage feature also charted as a fraction: values in (0, 1] are fractions.

    Not affine (the factor depends on the value), so callers that memoise a unit's
    conversion as ``a * value + b`` must not do so for this class (see
    ``fhir_adapters.observation.ObservationIndex.convert``).
    """

    __slots__ = ()
    _PERCENT_UNITS = frozenset({"", "%"})

    def to_canonical(self, value: float, unit: str | None) -> float | None:
        """As ``FeatureDef.to_canonical``, but 0 < value <= 1 in % / no unit is x 100."""
        if normalise_unit(unit) in self._PERCENT_UNITS and 0.0 < value <= 1.0:
            return float(value) * 100.0
        return FeatureDef.to_canonical(self, value, unit)


def _f(
    code: str,
    name: str,
    unit: str,
    loinc: tuple[str, ...],
    itemids: tuple[int, ...],
    plausible: tuple[float, float],
    *conversions: UnitConversion,
    aliases: tuple[str, ...] = (),
    answers: dict[str, float] | None = None,
    itemid_units: dict[int, str] | None = None,
    flag_above: tuple[str, float] | None = None,
    kind: type[FeatureDef] = FeatureDef,
) -> FeatureDef:
    return kind(
        code=code,
        name=name,
        unit=unit,
        loinc=loinc,
        itemids=itemids,
        plausible=plausible,
        conversions=conversions,
        answers=MappingProxyType(dict(answers or {})),
        aliases=aliases,
        itemid_units=MappingProxyType(dict(itemid_units or {})),
        flag_above=flag_above,
    )


_C = UnitConversion

FEATURES: tuple[FeatureDef, ...] = (
    # --- the 17 Harutyunyan / MedFuse clinical variables -------------------------------
    _f("capillary_refill", "Capillary refill rate (abnormal > 3 s)", "1",
       ("44963-7",), (223951, 224308), (0.0, 1.0),
       aliases=("{flag}", "{abnormal}"), answers=_CAP_REFILL, flag_above=("s", 3.0)),
    _f("diastolic_bp", "Diastolic blood pressure", "mm[Hg]",
       ("8462-4", "76535-4", "76213-8", "8453-3", "8454-1", "8455-8"),
       (220180, 220051), (0.0, 375.0), aliases=_MMHG),
    _f("fio2", "Fraction of inspired oxygen", "%",
       ("3150-0", "19994-3", "19996-8"), (223835, 50816), (20.0, 100.0),
       _C(("1", "{fraction}", "fraction", "L/L"), 100.0), kind=_FractionOrPercentDef),
    _f("gcs_eye", "Glasgow coma scale eye opening", "{score}",
       ("9267-6",), (220739,), (1.0, 4.0), aliases=("1", "{points}", "(score)"),
       answers=_GCS_EYE),
    _f("gcs_motor", "Glasgow coma scale motor response", "{score}",
       ("9268-4",), (223901,), (1.0, 6.0), aliases=("1", "{points}", "(score)"),
       answers=_GCS_MOTOR),
    _f("gcs_total", "Glasgow coma scale total", "{score}",
       ("9269-2",), (), (3.0, 15.0), aliases=("1", "{points}", "(score)")),
    _f("gcs_verbal", "Glasgow coma scale verbal response", "{score}",
       ("9270-0",), (223900,), (1.0, 5.0), aliases=("1", "{points}", "(score)"),
       answers=_GCS_VERBAL),
    _f("glucose", "Glucose", "mg/dL",
       ("2345-7", "2339-0", "41653-7", "2341-6", "2340-8", "32016-8",
        "14749-6", "15074-8", "14743-9"),
       (220621, 225664, 226537, 50931, 50809), (5.0, 2500.0),
       _C(("mmol/L",), _GLUCOSE_MG_PER_MMOL), _C(("g/L",), 100.0)),
    _f("heart_rate", "Heart rate", "/min",
       ("8867-4", "8889-8", "8893-0"), (220045,), (0.0, 350.0), aliases=_PER_MIN),
    _f("height", "Body height", "cm",
       ("8302-2", "8306-3", "3137-7", "3138-5"), (226730, 226707), (30.0, 250.0),
       _C(("[in_i]", "[in_us]", "in", "inch", "inches"), _IN_TO_CM),
       _C(("m",), 100.0), _C(("[ft_i]", "ft"), 30.48), _C(("mm",), 0.1),
       itemid_units={226707: "[in_i]"}),
    _f("mean_bp", "Mean blood pressure", "mm[Hg]",
       ("8478-0", "76536-2", "76214-6"), (220181, 220052), (0.0, 375.0), aliases=_MMHG),
    _f("spo2", "Oxygen saturation", "%",
       ("59408-5", "2708-6", "2710-2", "20564-1"), (220277, 50817), (0.0, 100.0),
       _C(("1", "{fraction}", "fraction"), 100.0)),
    _f("resp_rate", "Respiratory rate", "/min",
       ("9279-1",), (220210, 224690), (0.0, 150.0), aliases=(*_BREATHS, "1/min")),
    _f("systolic_bp", "Systolic blood pressure", "mm[Hg]",
       ("8480-6", "76534-7", "76215-3", "8459-0", "8460-8", "8461-6"),
       (220179, 220050), (0.0, 375.0), aliases=_MMHG),
    _f("temperature", "Body temperature", "Cel",
       ("8310-5", "8331-1", "8332-9", "8328-7", "8333-7", "8329-5"),
       (223762, 223761), (25.0, 45.0),
       _C(("[degF]", "degF", "F"), _F_SCALE, -32.0 * _F_SCALE),
       _C(("K",), 1.0, -273.15),
       aliases=("degC", "C", "°C"), itemid_units={223761: "[degF]", 223762: "Cel"}),
    _f("weight", "Body weight", "kg",
       ("29463-7", "3141-9", "3142-7", "8335-2"), (226512, 224639, 226531), (0.2, 500.0),
       _C(("[lb_av]", "lb", "lbs", "[lb_us]"), _LB_TO_KG),
       _C(("[oz_av]", "oz"), _OZ_TO_KG), _C(("g",), 0.001),
       itemid_units={226531: "[lb_av]"}),
    _f("ph", "pH", "[pH]",
       ("2744-1", "11558-4", "2746-6", "2753-2"), (50820, 223830, 220274), (6.3, 8.4),
       aliases=("pH", "units", "{pH}", "1")),
    # --- core labs ----------------------------------------------------------------------
    _f("creatinine", "Creatinine", "mg/dL",
       ("2160-0", "38483-4", "14682-9", "59826-8"), (50912,), (0.05, 40.0),
       _C(("umol/L", "µmol/L"), 1.0 / _CREATININE_UMOL_PER_MG),
       _C(("mmol/L",), 1000.0 / _CREATININE_UMOL_PER_MG)),
    _f("bun", "Urea nitrogen", "mg/dL",
       ("3094-0", "6299-2", "14937-7"), (51006,), (1.0, 300.0),
       _C(("mmol/L",), _UREA_N_MG_PER_MMOL)),
    _f("sodium", "Sodium", "mmol/L",
       ("2951-2", "2947-0", "32717-1"), (50983, 50824), (80.0, 200.0), aliases=_MEQ),
    _f("potassium", "Potassium", "mmol/L",
       ("2823-3", "6298-4", "32713-0"), (50971, 50822), (1.0, 12.0), aliases=_MEQ),
    _f("chloride", "Chloride", "mmol/L",
       ("2075-0", "2069-3"), (50902, 50806), (50.0, 180.0), aliases=_MEQ),
    _f("bicarbonate", "Bicarbonate / total CO2", "mmol/L",
       ("1963-8", "1959-6", "1960-4", "14627-4", "2028-9", "20565-8"),
       (50882, 50803), (2.0, 60.0), aliases=_MEQ),
    _f("wbc", "White blood cell count", "10*3/uL",
       ("6690-2", "26464-8", "804-5"), (51301, 51300), (0.0, 500.0),
       _C(("/uL", "/mm3", "cells/uL"), 0.001), aliases=_THOUSAND_PER_UL),
    _f("hemoglobin", "Haemoglobin", "g/dL",
       ("718-7", "20509-6", "30313-1", "59260-0"), (51222, 50811), (1.0, 25.0),
       _C(("g/L",), 0.1), _C(("mmol/L",), _HB_G_PER_MMOL)),
    _f("hematocrit", "Haematocrit", "%",
       ("4544-3", "20570-8", "31100-1"), (51221, 50810), (5.0, 75.0),
       _C(("1", "L/L", "{fraction}"), 100.0)),
    _f("platelets", "Platelet count", "10*3/uL",
       ("777-3", "26515-7", "778-1"), (51265,), (0.0, 2500.0),
       _C(("/uL", "/mm3"), 0.001), aliases=_THOUSAND_PER_UL),
    _f("lactate", "Lactate", "mmol/L",
       ("2524-7", "32693-4", "2518-9"), (50813,), (0.1, 30.0),
       _C(("mg/dL",), 1.0 / _LACTATE_MG_PER_MMOL), aliases=("mEq/L",)),
    _f("bilirubin", "Bilirubin, total", "mg/dL",
       ("1975-2", "42719-5", "14631-6"), (50885,), (0.0, 80.0),
       _C(("umol/L", "µmol/L"), 1.0 / _BILIRUBIN_UMOL_PER_MG)),
    _f("inr", "INR", "{INR}",
       ("6301-6", "34714-6", "46418-0"), (51237,), (0.5, 20.0),
       aliases=("INR", "{ratio}", "ratio", "1")),
    # --- blood gases, liver panel, magnesium, troponin (spec 2) --------------------------
    # Mortality predictors of the PhysioNet/CinC 2012 set that MIMIC-IV labs also carry.
    _f("pao2", "Oxygen partial pressure", "mm[Hg]",
       ("11556-8", "2703-7"), (50821,), (10.0, 800.0),
       _C(("kPa",), _MMHG_PER_KPA), aliases=_MMHG),
    _f("paco2", "Carbon dioxide partial pressure", "mm[Hg]",
       ("11557-6", "2019-8"), (50818,), (5.0, 250.0),
       _C(("kPa",), _MMHG_PER_KPA), aliases=_MMHG),
    _f("albumin", "Albumin", "g/dL",
       ("1751-7", "2862-1", "61151-7", "61152-5"), (50862,), (0.5, 7.0),
       _C(("g/L",), 0.1)),
    _f("alt", "Alanine aminotransferase", "U/L",
       ("1742-6", "1743-4", "1744-2", "76625-3"), (50861,), (0.0, 25000.0),
       _C(("ukat/L", "µkat/L"), _U_PER_UKAT), aliases=_ENZYME_UNITS),
    _f("ast", "Aspartate aminotransferase", "U/L",
       ("1920-8", "30239-8"), (50878,), (0.0, 40000.0),
       _C(("ukat/L", "µkat/L"), _U_PER_UKAT), aliases=_ENZYME_UNITS),
    _f("alp", "Alkaline phosphatase", "U/L",
       ("6768-6",), (50863,), (0.0, 6000.0),
       _C(("ukat/L", "µkat/L"), _U_PER_UKAT), aliases=_ENZYME_UNITS),
    _f("magnesium", "Magnesium", "mg/dL",
       ("19123-9", "2601-3", "21377-7"), (50960,), (0.2, 20.0),
       _C(("mmol/L",), _MG_MG_PER_MMOL), _C(("mEq/L", "meq/L"), _MG_MG_PER_MMOL / 2.0)),
    _f("troponin_t", "Troponin T", "ng/mL",
       ("6598-7", "67151-1", "48425-3"), (51003,), (0.0, 100.0),
       _C(("ng/L", "pg/mL"), 0.001), aliases=("ug/L", "µg/L")),
)  # fmt: skip

# itemid -> the LOINC it means, where that is not its feature's first code (see docstring).
ITEMID_LOINC: Mapping[int, str] = MappingProxyType({
    # chartevents (mimic-iv/mapping/meas_chartevents_main.csv)
    220179: "76534-7",  # Non Invasive Blood Pressure systolic
    220180: "76535-4",  # Non Invasive Blood Pressure diastolic
    220181: "76536-2",  # Non Invasive Blood Pressure mean
    220274: "2746-6",  # PH (Venous)
    225664: "41653-7",  # Glucose finger stick (glucometer)
    226537: "2339-0",  # Glucose (whole blood)
    # labevents, blood gas panel (d_labitems fluid Blood, category Blood Gas)
    50803: "1959-6",  # Calculated Bicarbonate, Whole Blood
    50806: "2069-3",  # Chloride, Whole Blood
    50809: "2339-0",  # Glucose (blood gas)
    50810: "20570-8",  # Hematocrit, Calculated
    50813: "32693-4",  # Lactate (blood gas)
    50816: "19994-3",  # Oxygen (inspired fraction, ventilator setting)
    50817: "20564-1",  # Oxygen Saturation (blood gas, measured)
    50820: "11558-4",  # pH (blood gas)
    50822: "6298-4",  # Potassium, Whole Blood
    50824: "2947-0",  # Sodium, Whole Blood
})  # fmt: skip


def _check_itemid_loinc(features: tuple[FeatureDef, ...]) -> None:
    """Every ``ITEMID_LOINC`` entry must be an itemid and a LOINC of the same feature,
    or the adapter would map the exported code back to another feature (or none)."""
    by_itemid = {i: f for f in features for i in f.itemids}
    for itemid, loinc in ITEMID_LOINC.items():
        fdef = by_itemid.get(itemid)
        if fdef is None or loinc not in fdef.loinc:
            raise ValueError(f"ITEMID_LOINC {itemid} -> {loinc} is not a code of one feature")


_check_itemid_loinc(FEATURES)


def loinc_for_itemid(feature: FeatureDef, itemid: int) -> str:
    """The LOINC code a MIMIC-IV row of ``itemid`` means (the feature's first by default).

    Only a code the feature itself lists is returned, so a custom spec without the
    whole-blood codes still round-trips through the FHIR adapters.
    """
    code = ITEMID_LOINC.get(itemid)
    return code if code is not None and code in feature.loinc else feature.loinc[0]


# --- static vocabularies (index 0 is always UNKNOWN) ---------------------------------------
SEXES: tuple[str, ...] = (UNKNOWN, "female", "male", "other")
RACES: tuple[str, ...] = (
    UNKNOWN,
    "american_indian_or_alaska_native",
    "asian",
    "black_or_african_american",
    "native_hawaiian_or_other_pacific_islander",
    "white",
    "other",
)
ETHNICITIES: tuple[str, ...] = (UNKNOWN, "hispanic", "not_hispanic")
ADMISSION_TYPES: tuple[str, ...] = (UNKNOWN, "emergency", "urgent", "elective", "observation")

STATIC_CATEGORIES = MappingProxyType(
    {
        "sex": SEXES,
        "race": RACES,
        "ethnicity": ETHNICITIES,
        "admission_type": ADMISSION_TYPES,
    }
)

# US Core race / ethnicity extensions use the CDC Race & Ethnicity code system (OMB).
RACE_OMB_CODES = MappingProxyType(
    {
        "1002-5": "american_indian_or_alaska_native",
        "2028-9": "asian",
        "2054-5": "black_or_african_american",
        "2076-8": "native_hawaiian_or_other_pacific_islander",
        "2106-3": "white",
        "2131-1": "other",
    }
)
ETHNICITY_OMB_CODES = MappingProxyType({"2135-2": "hispanic", "2186-5": "not_hispanic"})

# Free-text race (MIMIC-IV admissions.race, FHIR display text) by prefix, longest first.
_RACE_PREFIXES: tuple[tuple[str, str], ...] = (
    ("american indian", "american_indian_or_alaska_native"),
    ("alaska native", "american_indian_or_alaska_native"),
    ("native hawaiian", "native_hawaiian_or_other_pacific_islander"),
    ("pacific islander", "native_hawaiian_or_other_pacific_islander"),
    ("black", "black_or_african_american"),
    ("african american", "black_or_african_american"),
    ("asian", "asian"),
    ("white", "white"),
    ("portuguese", "white"),
    ("multiple race", "other"),
    ("other", "other"),
    ("south american", "other"),
)
_UNKNOWN_TEXTS = ("unknown", "unable to obtain", "patient declined", "declined", "asked but")

_SEX_TEXTS = MappingProxyType(
    {"f": "female", "female": "female", "m": "male", "male": "male", "other": "other"}
)

# MIMIC-IV admissions.admission_type and v3-ActPriority codes -> category.
_ADMISSION_TYPE_TEXTS = MappingProxyType(
    {
        "ew emer.": "emergency",
        "direct emer.": "emergency",
        "emergency": "emergency",
        "em": "emergency",
        "urgent": "urgent",
        "ur": "urgent",
        "a": "urgent",
        "elective": "elective",
        "el": "elective",
        "r": "elective",
        "surgical same day admission": "elective",
        "observation admit": "observation",
        "eu observation": "observation",
        "direct observation": "observation",
        "ambulatory observation": "observation",
        "observation": "observation",
    }
)


def sex_category(text: str | None) -> str:
    """``"F"``/``"female"``/``"male"``/... -> a ``SEXES`` entry (UNKNOWN when unmapped)."""
    return _SEX_TEXTS.get((text or "").strip().lower(), UNKNOWN)


def race_category(text: str | None) -> str:
    """An OMB code (``"2106-3"``) or free text (``"BLACK/CAPE VERDEAN"``) -> a ``RACES`` entry.

    Hispanic/Latino is an ethnicity, not a race: it maps to UNKNOWN here.
    """
    t = (text or "").strip().lower()
    if t in RACE_OMB_CODES:
        return RACE_OMB_CODES[t]
    if not t or any(t.startswith(u) for u in _UNKNOWN_TEXTS):
        return UNKNOWN
    for prefix, category in _RACE_PREFIXES:
        if t.startswith(prefix):
            return category
    return UNKNOWN


def ethnicity_category(text: str | None) -> str:
    """An OMB code or free text -> ``"hispanic"`` / ``"not_hispanic"`` / UNKNOWN."""
    t = (text or "").strip().lower()
    if t in ETHNICITY_OMB_CODES:
        return ETHNICITY_OMB_CODES[t]
    if t.startswith(("not hispanic", "non-hispanic", "non hispanic")):
        return "not_hispanic"
    if t.startswith(("hispanic", "latino")):
        return "hispanic"
    return UNKNOWN


def admission_type_category(text: str | None) -> str:
    """MIMIC ``admission_type`` or a v3-ActPriority code -> an ``ADMISSION_TYPES`` entry."""
    return _ADMISSION_TYPE_TEXTS.get((text or "").strip().lower(), UNKNOWN)


def answer_value(feature: FeatureDef, answer: str | None) -> float | None:
    """Value of a coded answer (LOINC LA code, display text or MIMIC text), case-insensitive."""
    if not answer:
        return None
    return feature.answers.get(" ".join(answer.strip().lower().split()))


DEFAULT_SPEC = FeatureSpec(
    version=SPEC_VERSION,
    features=FEATURES,
    static_categories=STATIC_CATEGORIES,
)
