"""DICOM files on disk, found by StudyInstanceUID: synthetic exports and batch scoring.

Lookup, for one ImagingStudy:

1. the WADO-RS path layout ``<base>/studies/<study>/series/<series>/instances/<sop>.dcm``
   for each instance the ImagingStudy lists, where ``<base>`` is the study's Endpoint
   ``address`` when it is a relative path or ``file://`` URL (resolved under the
   source's root), then the root itself;
2. otherwise every DICOM file under the root, indexed once by StudyInstanceUID
   (headers only, cached for the life of the source).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from urllib.parse import unquote, urlparse

from fhir_adapters.imaging.dicom_keys import RADIOGRAPH_MODALITIES
from fhir_adapters.imaging.errors import ImageReferenceError, ImagingError
from fhir_adapters.imaging.reader import ImageReader, PydicomReader
from fhir_adapters.imaging.source import (
    ImagesAndNotes,
    Resource,
    frontal_view_notes,
    image_ref,
    lazy_pixels,
    study_label,
    study_uid,
)
from moe_core.records import ImageRef, QualityNote

__all__ = ["LocalFolderSource", "wado_path"]


def wado_path(base: Path, study: str, series: str, instance: str) -> Path:
    """Where a file lies in the WADO-RS path layout."""
    return base / "studies" / study / "series" / series / "instances" / f"{instance}.dcm"


def _file_bases(root: Path, study: Resource, related: Sequence[Resource]) -> list[Path]:
    wanted = {
        str(r.get("reference") or "").rstrip("/").split("/")[-1]
        for r in study.get("endpoint") or []
    }
    bases: list[Path] = []
    for res in related:
        if res.get("resourceType") != "Endpoint" or res.get("id") not in wanted:
            continue
        address = str(res.get("address") or "")
        parsed = urlparse(address)
        if parsed.scheme == "file":
            bases.append(Path(unquote(parsed.path)))
        elif address and not parsed.scheme:
            bases.append(root / address)
    return [*bases, root]


class LocalFolderSource:
    """``ImageSource`` over a folder of DICOM files (any layout, WADO layout fastest)."""

    def __init__(
        self,
        root: Path,
        *,
        reader: ImageReader | None = None,
        modalities: frozenset[str] = RADIOGRAPH_MODALITIES,
    ) -> None:
        self.root = Path(root)
        self.reader: ImageReader = reader or PydicomReader()
        self.modalities = modalities
        self._index: dict[str, list[Path]] | None = None

    def _listed(self, study: Resource, related: Sequence[Resource], uid: str) -> list[Path]:
        bases = _file_bases(self.root, study, related)
        found = []
        for series in study.get("series") or []:
            for instance in series.get("instance") or []:
                for base in bases:
                    path = wado_path(base, uid, str(series.get("uid")), str(instance.get("uid")))
                    if path.is_file():
                        found.append(path)
                        break
        return found

    def _files(self) -> Iterator[Path]:
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and self.reader.verify_suffix(path):
                yield path

    def index(self) -> dict[str, list[Path]]:
        """StudyInstanceUID -> files, built on first use (unreadable files are left out)."""
        if self._index is None:
            index: dict[str, list[Path]] = defaultdict(list)
            for path in self._files():
                try:
                    index[self.reader.read_header(path).study_uid].append(path)
                except ImagingError:
                    continue
            self._index = dict(index)
        return self._index

    def images_for(self, study: Resource, related: Sequence[Resource]) -> ImagesAndNotes:
        """ImageRefs for the study's files; pixels are read when loaded."""
        label = study_label(study)
        uid = study_uid(study)
        if not uid:
            return [], [QualityNote(label, ImageReferenceError.reason, "no StudyInstanceUID")]
        paths = self._listed(study, related, uid) or self.index().get(uid, [])
        if not paths:
            return [], [QualityNote(label, ImageReferenceError.reason, "no DICOM file found")]
        refs: list[ImageRef] = []
        notes: list[QualityNote] = []
        for path in paths:
            try:
                header = self.reader.read_header(path)
            except ImagingError as exc:
                notes.append(QualityNote(label, exc.reason, path.name))
                continue
            if header.modality not in self.modalities:
                continue
            made = image_ref(header, study, loader=lazy_pixels(partial(Path, path), self.reader))
            if isinstance(made, QualityNote):
                notes.append(made)
            else:
                refs.append(made)
        return refs, [*notes, *frontal_view_notes(study, refs)]
