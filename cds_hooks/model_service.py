"""The served model: loads a checkpoint once, turns FHIR resources into a ``PredictionView``.

The pipeline per call is the one every source takes (DESIGN.md): FHIR resources ->
``fhir_adapters`` record assembly -> ``PatientRecord`` -> ``moe_core.inference.Predictor``.
This module only chooses the admission, measures the window and translates the
predictor's output for the cards; it holds no model math and parses no FHIR itself.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from cds_hooks.config import Settings
from cds_hooks.prediction import ModelInfo, PopulationStats, PredictionView
from moe_core.modalities import Modality, Task
from moe_core.records import DEFAULT_WINDOW_HOURS

__all__ = [
    "MODEL_CARD_FILE",
    "POPULATION_FILE",
    "SERVICE_INFO_FILE",
    "BoundedCache",
    "ModelService",
    "load_population",
]

POPULATION_FILE = "population.json"  # {"task key": {"prevalence": p, "quantiles": [...]}}
MODEL_CARD_FILE = "MODEL_CARD.md"
SERVICE_INFO_FILE = "service.json"  # {"name", "version", "synthetic"} shown on the cards


class BoundedCache(MutableMapping[str, Any]):
    """A least-recently-used mapping with at most ``capacity`` entries."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, capacity)
        self._data: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __getitem__(self, key: str) -> Any:
        with self._lock:
            value = self._data[key]
            self._data.move_to_end(key)
            return value

    def __setitem__(self, key: str, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def __delitem__(self, key: str) -> None:
        with self._lock:
            del self._data[key]

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._data))

    def __len__(self) -> int:
        return len(self._data)


def _service_info(folder: Path) -> dict[str, Any]:
    path = folder / SERVICE_INFO_FILE
    if not path.is_file():
        return {}
    info = orjson.loads(path.read_bytes())
    return info if isinstance(info, dict) else {}


def load_population(folder: Path) -> dict[str, PopulationStats]:
    """Training-population statistics stored beside a checkpoint (empty when absent)."""
    path = folder / POPULATION_FILE
    if not path.is_file():
        return {}
    raw = orjson.loads(path.read_bytes())
    out: dict[str, PopulationStats] = {}
    for task in Task:
        entry = raw.get(task.key)
        if isinstance(entry, dict) and "prevalence" in entry:
            out[task.key] = PopulationStats(
                prevalence=float(entry["prevalence"]),
                quantiles=tuple(float(q) for q in entry.get("quantiles", ())),
            )
    return out


def _checksum(folder: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else [folder]
    for p in files:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


@dataclass(slots=True)
class ModelService:
    """A loaded predictor and what the service says about it."""

    predictor: Any  # moe_core.inference.Predictor
    name: str
    version: str
    spec_version: str
    path: Path
    checksum: str
    synthetic: bool
    population: dict[str, PopulationStats] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, settings: Settings) -> ModelService:
        """Load ``settings.model_path`` (default: the shipped synthetic demo model)."""
        from moe_core.inference import Predictor

        path = settings.model_path
        if not path.exists():
            raise FileNotFoundError(
                f"model checkpoint not found: {path} (set MOE_HEALTH_MODEL_PATH)"
            )
        predictor = Predictor.from_checkpoint(
            path,
            device=settings.model_device,
            batch_size=8,
            # note/image embeddings are reused across calls for the same content
            text_cache=BoundedCache(settings.embedding_cache_size),
            image_cache=BoundedCache(settings.embedding_cache_size),
        )
        meta = dict(predictor.meta)
        folder = path if path.is_dir() else path.parent
        info = _service_info(folder)
        training = meta.get("training") or {}
        version = str(
            info.get("version")
            or training.get("version")
            or f"{meta.get('package_version', '0')}+{str(meta.get('weights_sha256', ''))[:8]}"
        )
        return cls(
            predictor=predictor,
            name=str(info.get("name") or training.get("name") or "MoE-Health"),
            version=version,
            spec_version=str(meta.get("spec_version", "")),
            path=path,
            checksum=str(meta.get("weights_sha256") or _checksum(path)),
            synthetic=bool(info.get("synthetic", True)),
            population=load_population(folder),
            metrics=dict(meta.get("metrics") or {}),
        )

    def registry_fields(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "spec_version": self.spec_version,
            "checksum": self.checksum,
            "path": str(self.path),
            "metrics": self.metrics,
        }

    def info(self, base_url: str) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            version=self.version,
            card_url=f"{base_url}/model-card",
            synthetic=self.synthetic,
            population=self.population,
        )

    def card_markdown(self) -> str:
        folder = self.path if self.path.is_dir() else self.path.parent
        card = folder / MODEL_CARD_FILE
        if card.is_file():
            return card.read_text(encoding="utf-8")
        return (
            f"# {self.name} {self.version}\n\nNo model card was shipped with this checkpoint "
            f"({self.path}).\n"
        )

    def predict_view(
        self,
        resources: Sequence[dict[str, Any]],
        patient_id: str,
        encounter_id: str | None,
        gather_notes: Sequence[str] = (),
    ) -> PredictionView:
        """Assemble the admission from ``resources`` and predict (blocking; run in a thread)."""
        from fhir_adapters.imaging.attachments import AttachmentSource
        from fhir_adapters.record import build_records

        now = datetime.now(UTC)
        images = AttachmentSource()  # DICOM sent inline; never files or URLs named by the caller
        notes = list(gather_notes)
        # One assembly with the full window; an ongoing stay is then cut at "now" (no data
        # after now exists, so this equals assembling with prediction_time=now).
        records = build_records(list(resources), image_source=images)
        record = _choose(records, patient_id, encounter_id)
        if record is None:
            reason = "no inpatient encounter with a start time to score"
            return _abstained(patient_id, encounter_id, now, reason, notes)
        if record.anchor_time > now:
            # Date-shifted records (synthetic or de-identified data) start in the future.
            notes.append(
                "record dates lie in the future (date-shifted data): the first "
                f"{DEFAULT_WINDOW_HOURS} h of the admission were used"
            )
        elif now < record.prediction_time:
            record.prediction_time = now
        pred = self.predictor.predict([record])[0]
        notes += [_quality_text(q) for q in pred.quality]
        cutoff = record.prediction_time
        window_start = max(record.anchor_time, cutoff - timedelta(hours=DEFAULT_WINDOW_HOURS))
        present = record.present
        return PredictionView(
            patient_ref=f"Patient/{patient_id}",
            encounter_ref=f"Encounter/{record.encounter_id}",
            risks={k: float(v) for k, v in (pred.risks or {}).items()},
            gate_weights={k: float(v) for k, v in pred.gate_weights.items()},
            modalities_used=tuple(m.upper() for m in pred.modalities_used),
            modalities_missing=tuple(m.upper() for m in pred.modalities_missing),
            window_start=window_start,
            window_end=cutoff,
            hours_covered=round(pred.hours_covered),
            n_events=sum(1 for e in record.events if window_start <= e.time < cutoff),
            n_notes=sum(1 for n in record.notes if n.time < cutoff and n.text.strip()),
            n_images=1 if present[Modality.IMAGE] else 0,
            quality_notes=tuple(dict.fromkeys(notes)),  # each note once, in order
            abstain_reason=pred.abstain_reason,
        )

    def risk_assessment(self, view: PredictionView, task: Task) -> dict[str, Any]:
        """A FHIR RiskAssessment for one task of ``view`` (built by ``fhir_adapters``).

        The ``id`` is dropped: this goes into a ``create`` action, where the EHR assigns it.
        """
        from fhir_adapters.risk_assessment import risk_assessment

        resource = risk_assessment(
            patient_id=view.patient_ref.removeprefix("Patient/"),
            encounter_id=(view.encounter_ref or "").removeprefix("Encounter/"),
            occurrence=view.window_end,
            risks={task: view.risks[task.key]},
            model_name=self.name,
            model_version=self.version,
            modalities_used=[Modality[m] for m in view.modalities_used],
            modalities_missing=[Modality[m] for m in view.modalities_missing],
            gate_weights=view.gate_weights,
        )
        resource.pop("id", None)
        return resource

def _choose(records: Sequence[Any], patient_id: str, encounter_id: str | None) -> Any:
    """The context's admission: the named encounter, else the patient's most recent one."""
    records = [r for r in records if r.patient_id == patient_id]  # never another patient's
    if not records:
        return None
    if encounter_id:
        for r in records:
            if r.encounter_id == encounter_id:
                return r
        return None
    return max(records, key=lambda r: r.anchor_time)  # the most recent admission


def _quality_text(q: Any) -> str:
    text = f"{q.reason}"
    if q.detail:
        text += f" ({q.detail})"
    return text


def _abstained(
    patient_id: str, encounter_id: str | None, now: datetime, reason: str, notes: list[str]
) -> PredictionView:
    return PredictionView(
        patient_ref=f"Patient/{patient_id}",
        encounter_ref=f"Encounter/{encounter_id}" if encounter_id else None,
        risks={},
        gate_weights={},
        modalities_used=(),
        modalities_missing=tuple(m.name for m in Modality),
        window_start=now,
        window_end=now,
        hours_covered=0,
        n_events=0,
        n_notes=0,
        n_images=0,
        quality_notes=tuple(notes),
        abstain_reason=reason,
    )
