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
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import httpx
import orjson

from cds_hooks.config import Settings
from cds_hooks.prediction import ModelInfo, PopulationStats, PredictionView
from moe_core.modalities import MODALITIES, Modality, Task
from moe_core.records import DEFAULT_WINDOW_HOURS

__all__ = [
    "MODEL_CARD_FILE",
    "POPULATION_FILE",
    "SERVICE_INFO_FILE",
    "BoundedCache",
    "FhirBinaryResolver",
    "ModelService",
    "load_population",
    "resolve_window_hours",
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


def _recorded_window_hours(meta: Mapping[str, Any]) -> int | None:
    """The observation window a checkpoint says it was trained on, if it says so."""
    training = meta.get("training")
    for where in (meta, training if isinstance(training, Mapping) else {}):
        value = where.get("window_hours")
        if value is not None:
            return int(value)
    return None


def resolve_window_hours(meta: Mapping[str, Any], settings: Settings) -> int:
    """The one observation window the service uses (data fetch, assembly and cards).

    The checkpoint's own window wins when it records one, because a model fed a
    different window than it was trained on is silently miscalibrated; a setting that
    was given explicitly (``MOE_HEALTH_WINDOW_HOURS``) and contradicts it is an error.
    Without a recorded window the setting is used.
    """
    recorded = _recorded_window_hours(meta)
    if recorded is None:
        return settings.window_hours
    if "window_hours" in settings.model_fields_set and settings.window_hours != recorded:
        raise ValueError(
            f"MOE_HEALTH_WINDOW_HOURS={settings.window_hours} contradicts the checkpoint, "
            f"which was trained on a {recorded} h observation window; unset it or use "
            f"{recorded}"
        )
    return recorded


def _trained_combinations(predictor: Any) -> tuple[tuple[str, ...], ...]:
    """Modality names of each expert's training combination (empty for non-MoE models)."""
    model: Any = getattr(predictor, "model", None)
    if getattr(model, "kind", "") != "moe":
        return ()
    combinations = model.config.moe.combinations
    return tuple(
        tuple(m.name for m in MODALITIES if bool(combo[int(m)])) for combo in combinations
    )


class FhirBinaryResolver:
    """Attachment URL -> bytes from ``fhirServer`` with the hook's bearer token.

    Only URLs under ``fhirServer`` (relative ``Binary/...`` or absolute) are fetched:
    the token was issued for that server, and fetching URLs a caller names anywhere
    else would leak it and let callers make this service request arbitrary hosts.
    Built on ``fhir_adapters.client.FhirClient.binary`` (the resolver shape
    ``AttachmentSource`` and ``build_records`` accept); no retries, so a slow server
    costs one timeout, not several.
    """

    def __init__(
        self,
        base_url: str,
        access_token: str | None,
        timeout_s: float,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        from fhir_adapters.client import FhirClient, RetryPolicy

        self._client = FhirClient(
            base_url,
            auth=access_token,
            timeout=timeout_s,
            retry=RetryPolicy(retries=0),
            transport=transport,
        )
        self.base_url = self._client.base_url

    def owns(self, url: str) -> bool:
        """Whether ``url`` (resolved against fhirServer) stays under fhirServer."""
        absolute = urljoin(self.base_url, url)
        if not absolute.startswith(self.base_url):
            return False
        return ".." not in unquote(urlsplit(absolute).path).split("/")

    def __call__(self, url: str) -> tuple[bytes, str | None]:
        from fhir_adapters.imaging.errors import ImageReferenceError

        if not self.owns(url):
            raise ImageReferenceError(
                "attachment URL lies outside fhirServer; not fetched (the access token "
                "is only sent to fhirServer)"
            )
        return self._client.binary(url)

    def close(self) -> None:
        self._client.close()


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
    window_hours: int = DEFAULT_WINDOW_HOURS  # the one window: see resolve_window_hours
    trained_combinations: tuple[tuple[str, ...], ...] = ()  # modality names per expert
    fetch_timeout_s: float = 10.0  # attachment fetches from fhirServer

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
            window_hours=resolve_window_hours(meta, settings),
            trained_combinations=_trained_combinations(predictor),
            fetch_timeout_s=settings.fhir_read_timeout_s,
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
            trained_combinations=self.trained_combinations,
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
        fhir_server: str | None = None,
        access_token: str | None = None,
    ) -> PredictionView:
        """Assemble the admission from ``resources`` and predict (blocking; run in a thread).

        Attachments (X-ray DICOM, note text) come inline, from a Binary among the
        resources, or, when the hook gave a ``fhirServer``, from URLs under that server
        fetched with the hook's token; never from files or other URLs a caller names.
        """
        from fhir_adapters.imaging.attachments import AttachmentSource
        from fhir_adapters.record import build_records
        from moe_core.features import window_start as model_window_start

        now = datetime.now(UTC)
        notes = list(gather_notes)
        resolver = (
            FhirBinaryResolver(fhir_server, access_token, self.fetch_timeout_s)
            if fhir_server
            else None
        )
        try:
            # One assembly with the full window; an ongoing stay is then cut at "now" (no
            # data after now exists, so this equals assembling with prediction_time=now).
            records = build_records(
                list(resources),
                window_hours=self.window_hours,
                image_source=AttachmentSource(resolver),
                binary_resolver=resolver,
            )
        finally:
            if resolver is not None:
                resolver.close()
        record = _choose(records, patient_id, encounter_id)
        if record is None:
            reason = "no inpatient encounter with a start time to score"
            return _abstained(patient_id, encounter_id, now, reason, notes)
        if record.anchor_time > now:
            # Date-shifted records (synthetic or de-identified data) start in the future.
            notes.append(
                "record dates lie in the future (date-shifted data): the first "
                f"{self.window_hours} h of the admission were used"
            )
        elif now < record.prediction_time:
            record.prediction_time = now
        pred = self.predictor.predict([record])[0]
        notes += [_quality_text(q) for q in pred.quality]
        cutoff = record.prediction_time
        window_start = model_window_start(record)  # what the featuriser actually reads
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
