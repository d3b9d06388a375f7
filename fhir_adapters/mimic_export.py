"""MIMIC-IV (+ MIMIC-IV-Note, MIMIC-CXR-JPG) -> a FHIR R4 Bulk-Data-style NDJSON export.

Built from the raw MIMIC rows (never from ``PatientRecord``s), so reading the export
back through ``fhir_adapters`` is an independent path to the same records -- the parity
test compares the two. What is written:

* ``Patient``: gender, ``birthDate`` (the date MIMIC's anchor age implies), US Core
  race/ethnicity extensions (OMB codes + the original text), ``deceasedDateTime``
  (in-hospital ``deathtime``, else ``dod``);
* ``Encounter`` per hospital admission: class IMP, ``period`` (admission to discharge, or
  to a later in-hospital death: ``training.mimic.demographics.stay_end_sql``), priority
  (v3-ActPriority code + MIMIC text), discharge disposition;
* ``Observation`` per chartevents/labevents row whose itemid the feature spec knows: the
  itemid's own LOINC code (``loinc_for_itemid``: whole-blood glucose 50809 is 2339-0,
  not serum 2345-7) AND the MIMIC itemid coding, the value in the ORIGINAL unit
  (``valueuom`` spelled as UCUM), so the FHIR side really converts units; lab rows carry
  ``issued`` = ``storetime`` (when the result was known);
* ``DocumentReference`` per note (discharge summaries included, typed LOINC 18842-5: the
  reader must drop them), dated when the note became available (``storetime``);
* ``ImagingStudy`` per CXR study: start time, and per image its view position and the
  JPG path (an extension) -- MIMIC-CXR-JPG has no DICOM to retrieve.

Files: ``<Type>.ndjson`` (or ``.ndjson.gz``) and a ``manifest.json`` like a Bulk
``$export`` completion response. Everything streams from DuckDB.
"""

from __future__ import annotations

import base64
import gzip
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

import duckdb
import orjson

from fhir_adapters.fhir_keys import (
    ACT_CODE_SYSTEM,
    LOINC_SYSTEM,
    UCUM_SYSTEM,
    US_CORE_ETHNICITY_URL,
    US_CORE_RACE_URL,
)
from moe_core.feature_catalog import (
    DEFAULT_SPEC,
    DISCHARGE_SUMMARY_LOINC,
    ETHNICITY_OMB_CODES,
    RACE_OMB_CODES,
    loinc_for_itemid,
    race_category,
)
from moe_core.feature_spec import FeatureSpec
from moe_core.records import UNKNOWN
from training.mimic.demographics import (
    mimic_birth_date,
    mimic_ethnicity,
    patient_race,
    stay_end_sql,
)
from training.mimic.events import RESULT_TIME_TABLES
from training.mimic.layout import (
    ADMISSIONS,
    CHARTEVENTS,
    LABEVENTS,
    PATIENTS,
    csv_source,
    find_cxr_metadata,
    find_table,
    resolve_columns,
)
from training.mimic.sources import cxr_image_path

__all__ = [
    "CHARTEVENTS_SYSTEM",
    "LABITEMS_SYSTEM",
    "MIMIC_UCUM",
    "MimicExportConfig",
    "export_mimic_fhir",
]

CHARTEVENTS_SYSTEM = "http://mimic.mit.edu/fhir/mimic/CodeSystem/mimic-chartevents-d-items"
LABITEMS_SYSTEM = "http://mimic.mit.edu/fhir/mimic/CodeSystem/mimic-d-labitems"
PATIENT_ID_SYSTEM = "http://mimic.mit.edu/fhir/mimic/identifier/patient"
PRIORITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActPriority"
DISPOSITION_SYSTEM = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
OBS_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
OMB_SYSTEM = "urn:oid:2.16.840.1.113883.6.238"
DICOM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
JPG_PATH_URL = "http://mimic.mit.edu/fhir/StructureDefinition/mimic-cxr-jpg-path"
RADIOLOGY_NOTE_LOINC = "18748-4"  # Diagnostic imaging study
OTHER_NOTE_LOINC = "34109-9"  # Note

# MIMIC ``valueuom`` spellings -> UCUM codes (unknown spellings are written as given).
MIMIC_UCUM: Mapping[str, str] = {
    "bpm": "/min", "insp/min": "/min", "mmHg": "mm[Hg]", "°F": "[degF]", "°C": "Cel",
    "%": "%", "kg": "kg", "lbs": "[lb_av]", "Inch": "[in_i]", "cm": "cm",
    "mg/dL": "mg/dL", "mEq/L": "meq/L", "mmol/L": "mmol/L", "K/uL": "10*3/uL",
    "g/dL": "g/dL", "g/dl": "g/dL", "units": "[pH]", "IU/L": "[IU]/L", "sec": "s",
    "umol/L": "umol/L", "mg/L": "mg/L", "ng/mL": "ng/mL", "L/min": "L/min",
    "cmH2O": "cm[H2O]", "mL": "mL", "min": "min",
}  # fmt: skip
_PRIORITY = {"emergency": "EM", "urgent": "UR", "elective": "EL"}
_RACE_CODES = {v: k for k, v in RACE_OMB_CODES.items()}
_ETHNICITY_CODES = {v: k for k, v in ETHNICITY_OMB_CODES.items()}
_NOTE_SUFFIXES = (".csv.gz", ".csv")
_STORETIME = {"storetime": ("storetime",)}


@dataclass(frozen=True, slots=True)
class MimicExportConfig:
    """What to export and where."""

    mimic_dir: Path
    out: Path
    notes_dir: Path | None = None
    cxr_dir: Path | None = None
    spec: FeatureSpec = field(default=DEFAULT_SPEC)
    gzip: bool = False
    memory_limit: str = "8GB"
    temp_dir: Path | None = None


def _iso(t: datetime | None) -> str | None:
    if t is None:
        return None
    return t.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def _ref(kind: str, rid: object) -> dict[str, str]:
    return {"reference": f"{kind}/{rid}"}


class _Writers:
    """One NDJSON file per resource type, opened on first use."""

    def __init__(self, out: Path, gz: bool) -> None:
        self.out, self.gz = out, gz
        self.files: dict[str, IO[bytes]] = {}
        self.counts: Counter[str] = Counter()

    def write(self, resource: Mapping[str, Any]) -> None:
        rtype = str(resource["resourceType"])
        if rtype not in self.files:
            path = self.out / (f"{rtype}.ndjson" + (".gz" if self.gz else ""))
            opened = gzip.open(path, "wb") if self.gz else path.open("wb")  # noqa: SIM115
            self.files[rtype] = cast(IO[bytes], opened)
        self.files[rtype].write(orjson.dumps(resource) + b"\n")
        self.counts[rtype] += 1

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> Iterator[dict[str, Any]]:
    for batch in con.cursor().sql(sql).to_arrow_reader(8192):
        yield from batch.to_pylist()


def _us_core(url: str, category: str, codes: Mapping[str, str], text: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if category in codes:
        parts.append(
            {"url": "ombCategory", "valueCoding": {"system": OMB_SYSTEM, "code": codes[category]}}
        )
    parts.append({"url": "text", "valueString": text})
    return {"url": url, "extension": parts}


def _patients(con: duckdb.DuckDBPyConnection, root: Path) -> Iterator[dict[str, Any]]:
    pat = find_table(root, PATIENTS)
    adm = find_table(root, ADMISSIONS)
    assert pat is not None and adm is not None
    a = resolve_columns(con, adm, {"race": ("race", "ethnicity")})
    sql = (
        f"WITH a AS (SELECT subject_id, max(deathtime) AS deathtime, "
        f"list({a['race']} ORDER BY admittime, hadm_id) AS races FROM "
        f"{csv_source(adm, {'deathtime': 'TIMESTAMP', 'admittime': 'TIMESTAMP'})} "
        f"GROUP BY subject_id) "
        f"SELECT p.subject_id, p.gender, p.anchor_age, p.anchor_year, CAST(p.dod AS VARCHAR) "
        f"AS dod, a.deathtime, a.races FROM {csv_source(pat)} p LEFT JOIN a USING (subject_id) "
        f"ORDER BY p.subject_id"
    )
    for r in _rows(con, sql):
        race_text = patient_race(r["races"] or []) or UNKNOWN.upper()
        res: dict[str, Any] = {
            "resourceType": "Patient",
            "id": str(r["subject_id"]),
            "identifier": [{"system": PATIENT_ID_SYSTEM, "value": str(r["subject_id"])}],
            "gender": {"F": "female", "M": "male"}.get(str(r["gender"]).upper(), "unknown"),
            "birthDate": mimic_birth_date(r["anchor_age"], r["anchor_year"]).isoformat(),
            "extension": [
                _us_core(US_CORE_RACE_URL, race_category(race_text), _RACE_CODES, race_text),
                _us_core(
                    US_CORE_ETHNICITY_URL, mimic_ethnicity(race_text), _ETHNICITY_CODES, race_text
                ),
            ],
        }
        if r["deathtime"] is not None:
            res["deceasedDateTime"] = _iso(r["deathtime"])
        elif r["dod"]:
            res["deceasedDateTime"] = str(r["dod"])[:10]
        yield res


def _encounters(con: duckdb.DuckDBPyConnection, root: Path) -> Iterator[dict[str, Any]]:
    from moe_core.feature_catalog import admission_type_category

    adm = find_table(root, ADMISSIONS)
    assert adm is not None
    ts = {"admittime": "TIMESTAMP", "dischtime": "TIMESTAMP", "deathtime": "TIMESTAMP"}
    sql = (
        f"SELECT * REPLACE ({stay_end_sql('dischtime', 'deathtime')} AS dischtime) "
        f"FROM {csv_source(adm, ts)} ORDER BY subject_id, admittime, hadm_id"
    )
    for r in _rows(con, sql):
        priority: dict[str, Any] = {"text": r.get("admission_type") or ""}
        code = _PRIORITY.get(admission_type_category(r.get("admission_type")))
        if code:
            priority["coding"] = [{"system": PRIORITY_SYSTEM, "code": code}]
        disposition: dict[str, Any] = {"text": r.get("discharge_location") or UNKNOWN}
        if r.get("hospital_expire_flag") == 1:
            disposition["coding"] = [{"system": DISPOSITION_SYSTEM, "code": "exp"}]
        period = {"start": _iso(r["admittime"])}
        if r["dischtime"] is not None:
            period["end"] = _iso(r["dischtime"])
        yield {
            "resourceType": "Encounter",
            "id": str(r["hadm_id"]),
            "status": "finished",
            "class": {"system": ACT_CODE_SYSTEM, "code": "IMP", "display": "inpatient encounter"},
            "subject": _ref("Patient", r["subject_id"]),
            "period": period,
            "priority": priority,
            "hospitalization": {"dischargeDisposition": disposition},
        }


def _observations(
    con: duckdb.DuckDBPyConnection, root: Path, spec: FeatureSpec
) -> Iterator[dict[str, Any]]:
    by_itemid = spec.by_itemid()
    ids = ", ".join(str(i) for i in sorted(by_itemid))
    types = {"itemid": "BIGINT", "charttime": "TIMESTAMP", "value": "VARCHAR",
             "valuenum": "DOUBLE", "valueuom": "VARCHAR", "subject_id": "BIGINT"}  # fmt: skip
    parts = []
    for source, table in (("chartevents", CHARTEVENTS), ("labevents", LABEVENTS)):
        path = find_table(root, table, required=False)
        if path is not None:
            stored = _result_time_column(con, path, source)
            typed = types | ({stored: "TIMESTAMP"} if stored else {})
            parts.append(
                f"SELECT subject_id, hadm_id, charttime AS time, itemid, valuenum, "
                f"CAST(value AS VARCHAR) AS value, valueuom, '{source}' AS source, "
                f"{stored or 'NULL'} AS stored "
                f"FROM {csv_source(path, typed)} WHERE itemid IN ({ids})"
            )
    sql = " UNION ALL ".join(parts) + (
        " ORDER BY subject_id, time, source, itemid, valuenum, value"
    )
    for n, r in enumerate(_rows(con, sql)):
        itemid = int(r["itemid"])
        fdef = by_itemid[itemid]
        lab = r["source"] == "labevents"
        res: dict[str, Any] = {
            "resourceType": "Observation",
            "id": f"mimic-{'le' if lab else 'ce'}-{n}",
            "status": "final",
            "category": [{"coding": [{"system": OBS_CATEGORY_SYSTEM,
                                      "code": "laboratory" if lab else "vital-signs"}]}],
            "code": {"coding": [
                {"system": LOINC_SYSTEM, "code": loinc_for_itemid(fdef, itemid),
                 "display": fdef.name},
                {"system": LABITEMS_SYSTEM if lab else CHARTEVENTS_SYSTEM, "code": str(itemid)},
            ], "text": fdef.name},
            "subject": _ref("Patient", r["subject_id"]),
            "effectiveDateTime": _iso(r["time"]),
        }  # fmt: skip
        if r["stored"] is not None:
            res["issued"] = _iso(r["stored"])
        if r["hadm_id"] is not None:
            res["encounter"] = _ref("Encounter", int(r["hadm_id"]))
        value = _value(r, fdef.itemid_units.get(itemid))
        if value is None:
            continue
        res.update(value)
        yield res


def _result_time_column(con: duckdb.DuckDBPyConnection, path: Path, source: str) -> str:
    """``storetime`` of a lab table (when the result became known), else ``""``.

    Only labs: a lab drawn before the prediction time may be resulted after it, and the
    MIMIC path (``training.mimic.events.RESULT_TIME_TABLES``) and the FHIR reader (which
    drops an Observation ``issued`` at or after the prediction time) both honour that.
    """
    if source not in RESULT_TIME_TABLES:
        return ""
    return resolve_columns(con, path, _STORETIME, optional=("storetime",))["storetime"]


def _value(r: Mapping[str, Any], itemid_unit: str | None) -> dict[str, Any] | None:
    """``valueQuantity`` in the row's own unit, or ``valueString`` for a text result."""
    if r["valuenum"] is not None:
        uom = (r["valueuom"] or "").strip()
        q: dict[str, Any] = {"value": float(r["valuenum"])}
        if uom:
            q["unit"] = uom
            if uom in MIMIC_UCUM:
                q |= {"system": UCUM_SYSTEM, "code": MIMIC_UCUM[uom]}
        elif itemid_unit:  # MIMIC leaves the unit blank for some items (weight in lb)
            q |= {"unit": itemid_unit, "system": UCUM_SYSTEM, "code": itemid_unit}
        return {"valueQuantity": q}
    text = (r["value"] or "").strip()
    if not text:
        return None
    try:
        float(text)
    except ValueError:
        return {"valueString": text}
    return None  # a number MIMIC itself did not parse into valuenum: not a measurement


def _notes(con: duckdb.DuckDBPyConnection, notes_dir: Path) -> Iterator[dict[str, Any]]:
    base = notes_dir / "note" if (notes_dir / "note").is_dir() else notes_dir
    for path in sorted(p for p in base.iterdir() if p.name.endswith(_NOTE_SUFFIXES)):
        name = path.name.lower()
        if "_detail" in name:
            continue
        if name.startswith("discharge"):
            loinc, display = DISCHARGE_SUMMARY_LOINC[0], "Discharge summary"
        elif name.startswith("radiology"):
            loinc, display = RADIOLOGY_NOTE_LOINC, "Diagnostic imaging study"
        else:
            loinc, display = OTHER_NOTE_LOINC, "Note"
        types = {"charttime": "TIMESTAMP", "text": "VARCHAR", "note_id": "VARCHAR"}
        src = csv_source(path, types, extra="max_line_size=50000000")
        sql = (
            f"SELECT note_id, subject_id, hadm_id, charttime, "
            f"coalesce(TRY_CAST(storetime AS TIMESTAMP), charttime) AS available, text "
            f"FROM {src} ORDER BY subject_id, available, note_id"
        )
        for r in _rows(con, sql):
            res: dict[str, Any] = {
                "resourceType": "DocumentReference",
                "id": f"mimic-note-{r['note_id']}",
                "status": "current",
                "docStatus": "final",
                "type": {"coding": [{"system": LOINC_SYSTEM, "code": loinc, "display": display}],
                         "text": display},
                "subject": _ref("Patient", r["subject_id"]),
                "date": _iso(r["available"]),
                "content": [{"attachment": {
                    "contentType": "text/plain; charset=utf-8",
                    "data": base64.b64encode((r["text"] or "").encode()).decode(),
                }}],
            }  # fmt: skip
            if r["hadm_id"] is not None:
                res["context"] = {"encounter": [_ref("Encounter", int(r["hadm_id"]))]}
            yield res


def _studies(con: duckdb.DuckDBPyConnection, cxr_dir: Path) -> Iterator[dict[str, Any]]:
    meta = find_cxr_metadata(cxr_dir)
    sql = (
        f"SELECT dicom_id, CAST(subject_id AS BIGINT) AS subject_id, study_id, "
        f"upper(trim(ViewPosition)) AS view, try_strptime(StudyDate || lpad(split_part("
        f"StudyTime, '.', 1), 6, '0'), '%Y%m%d%H%M%S') AS time "
        f"FROM read_csv('{str(meta).replace(chr(39), chr(39) * 2)}', header=true, "
        f"all_varchar=true) ORDER BY subject_id, study_id, time, dicom_id"
    )
    current: dict[str, Any] | None = None
    for r in _rows(con, sql):
        if current is None or current["id"] != f"mimic-cxr-{r['study_id']}":
            if current is not None:
                yield current
            current = {
                "resourceType": "ImagingStudy",
                "id": f"mimic-cxr-{r['study_id']}",
                "status": "available",
                "subject": _ref("Patient", r["subject_id"]),
                "started": _iso(r["time"]),
                "modality": [{"system": DICOM_SYSTEM, "code": "DX"}],
                "series": [],
            }
        path = cxr_image_path(cxr_dir, int(r["subject_id"]), r["study_id"], r["dicom_id"])
        current["series"].append({
            "uid": r["dicom_id"],
            "modality": {"system": DICOM_SYSTEM, "code": "DX"},
            "instance": [{"uid": r["dicom_id"], "sopClass": {"code": "1.2.840.10008.5.1.4.1.1.1.1"},
                          "title": r["view"] or "",
                          "extension": [{"url": JPG_PATH_URL, "valueString": str(path)}]}],
        })  # fmt: skip
    if current is not None:
        yield current


def export_mimic_fhir(cfg: MimicExportConfig) -> dict[str, int]:
    """Write the NDJSON export and ``manifest.json``; returns resources written per type."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    writers = _Writers(cfg.out, cfg.gzip)
    with tempfile.TemporaryDirectory(dir=cfg.temp_dir, prefix="moe-export-") as temp:
        con = duckdb.connect(":memory:")
        con.execute(f"SET memory_limit = '{cfg.memory_limit}'")
        con.execute(f"SET temp_directory = '{str(temp).replace(chr(39), chr(39) * 2)}'")
        try:
            streams = [
                _patients(con, cfg.mimic_dir),
                _encounters(con, cfg.mimic_dir),
                _observations(con, cfg.mimic_dir, cfg.spec),
            ]
            if cfg.notes_dir is not None:
                streams.append(_notes(con, cfg.notes_dir))
            if cfg.cxr_dir is not None:
                streams.append(_studies(con, cfg.cxr_dir))
            for stream in streams:
                for res in stream:
                    writers.write(res)
        finally:
            writers.close()
            con.close()
    manifest = {
        "transactionTime": _iso(datetime.now(UTC)),
        "request": f"file://{cfg.mimic_dir.resolve()}",
        "requiresAccessToken": False,
        "output": [
            {"type": t, "url": f"{t}.ndjson" + (".gz" if cfg.gzip else ""), "count": n}
            for t, n in sorted(writers.counts.items())
        ],
        "error": [],
    }
    (cfg.out / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return dict(writers.counts)
