"""Where the MIMIC-IV tables live, and which columns they must have.

Releases differ: v1.0 kept admissions/patients in ``core/`` and called race
``ethnicity``; v2.x and v3.x use ``hosp/`` and ``race``; files may be ``.csv.gz``
or plain ``.csv``. Tables are found by trying these layouts in order, and a column
is read under the first of its known names. When a required table or column is
truly missing, ``MimicLayoutError`` names it and the places looked in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

__all__ = [
    "ADMISSIONS",
    "CHARTEVENTS",
    "CXR_METADATA",
    "ICUSTAYS",
    "LABEVENTS",
    "PATIENTS",
    "ColumnNames",
    "MimicLayoutError",
    "TableRef",
    "csv_source",
    "find_cxr_metadata",
    "find_note_tables",
    "find_table",
    "resolve_columns",
]

_SUFFIXES = (".csv.gz", ".csv")


class MimicLayoutError(FileNotFoundError):
    """A required MIMIC file or column is missing; the message names it."""


@dataclass(frozen=True, slots=True)
class TableRef:
    """A table name and the module folders it may live in, most recent release first."""

    name: str
    folders: tuple[str, ...]


ADMISSIONS = TableRef("admissions", ("hosp", "core"))
PATIENTS = TableRef("patients", ("hosp", "core"))
ICUSTAYS = TableRef("icustays", ("icu",))
CHARTEVENTS = TableRef("chartevents", ("icu",))
LABEVENTS = TableRef("labevents", ("hosp",))

# Logical column -> accepted names in the files, in order of preference.
ColumnNames = Mapping[str, Sequence[str]]

CXR_METADATA = ("mimic-cxr-2.0.0-metadata", "mimic-cxr-2.1.0-metadata", "metadata")


def find_table(root: Path, table: TableRef, *, required: bool = True) -> Path | None:
    """The file holding ``table`` under ``root`` (a MIMIC-IV folder)."""
    tried: list[str] = []
    for folder in (*table.folders, ""):
        for suffix in _SUFFIXES:
            path = root / folder / f"{table.name}{suffix}"
            tried.append(str(path.relative_to(root)))
            if path.is_file():
                return path
    if required:
        raise MimicLayoutError(
            f"MIMIC-IV table {table.name!r} not found under {root} (looked for: {', '.join(tried)})"
        )
    return None


def csv_source(path: Path, types: Mapping[str, str] | None = None, extra: str = "") -> str:
    """A DuckDB ``read_csv`` expression for ``path`` with the given column types."""
    quoted = str(path).replace("'", "''")
    opts = "header=true" + (f", {extra}" if extra else "")
    if types:
        pairs = ", ".join(f"'{k}': '{v}'" for k, v in types.items())
        opts += f", types={{{pairs}}}"
    return f"read_csv('{quoted}', {opts})"


def resolve_columns(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    wanted: ColumnNames,
    optional: Sequence[str] = (),
) -> dict[str, str]:
    """Logical column -> the name this file uses; error naming what is missing.

    Columns listed in ``optional`` map to ``""`` when absent.
    """
    header = {
        str(row[0]).lower(): str(row[0])
        for row in con.sql(f"DESCRIBE SELECT * FROM {csv_source(path)}").fetchall()
    }
    out: dict[str, str] = {}
    missing: list[str] = []
    for logical, names in wanted.items():
        found = next((header[n.lower()] for n in names if n.lower() in header), None)
        if found is not None:
            out[logical] = found
        elif logical in optional:
            out[logical] = ""
        else:
            missing.append(f"{logical} (as any of {', '.join(names)})")
    if missing:
        raise MimicLayoutError(f"{path} lacks required column(s): {'; '.join(missing)}")
    return out


def find_note_tables(notes_dir: Path) -> list[tuple[str, Path]]:
    """(kind, file) for MIMIC-IV-Note tables usable as inputs.

    Discharge summaries (``discharge*``) are written after the outcome is known and
    are never inputs; ``*_detail`` files hold no text. Radiology reports are kind
    ``radiology``; any other note table is kind ``other``.
    """
    if not notes_dir.is_dir():
        raise MimicLayoutError(f"notes folder not found: {notes_dir}")
    base = notes_dir / "note" if (notes_dir / "note").is_dir() else notes_dir
    out: list[tuple[str, Path]] = []
    for path in sorted(base.iterdir()):
        name = path.name.lower()
        if not name.endswith(_SUFFIXES) or name.startswith("discharge") or "_detail" in name:
            continue
        out.append(("radiology" if name.startswith("radiology") else "other", path))
    if not out:
        raise MimicLayoutError(
            f"no usable note table (e.g. radiology.csv.gz) in {base}; discharge summaries "
            "are never used as inputs"
        )
    return out


def find_cxr_metadata(cxr_dir: Path) -> Path:
    """The MIMIC-CXR-JPG metadata file in ``cxr_dir``."""
    for stem in CXR_METADATA:
        for suffix in _SUFFIXES:
            path = cxr_dir / f"{stem}{suffix}"
            if path.is_file():
                return path
    raise MimicLayoutError(
        f"MIMIC-CXR-JPG metadata not found in {cxr_dir} (looked for "
        f"{', '.join(s + '.csv[.gz]' for s in CXR_METADATA)})"
    )
