"""Checkpoints: ``model.safetensors`` (weights) + ``config.json`` (everything else).

``config.json`` records the model kind and config, the feature-spec version, the
expert combinations and names, the normalisation statistics, the package version, the
text encoder folder, metrics and free-form training metadata (data, split, dates).

A frozen text backbone loaded from a local folder is not copied into the checkpoint
(it is hundreds of MB and already on disk); the folder is recorded and loaded again.
Everything else — including a randomly initialised or fine-tuned DenseNet — is saved.
Loading refuses a feature spec whose version differs from the one trained with.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from moe_core.base import FusionModel
from moe_core.baselines import build_model
from moe_core.config import ModelConfig
from moe_core.feature_spec import FeatureSpec, NormStats

__all__ = [
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "WEIGHTS_FILE",
    "CheckpointError",
    "LoadedCheckpoint",
    "SpecMismatchError",
    "load_checkpoint",
    "read_checkpoint_meta",
    "save_checkpoint",
]

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1
_TEXT_BACKBONE = "encoders.text.backbone."


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be used (missing files, bad contents)."""


class SpecMismatchError(CheckpointError):
    """The checkpoint was trained with another feature-spec version."""


@dataclass(slots=True)
class LoadedCheckpoint:
    """A model ready for ``eval()`` plus what it was trained with."""

    model: FusionModel
    stats: NormStats
    spec_version: str
    meta: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)


def _package_version() -> str:
    try:
        from moe_health import __version__

        return str(__version__)
    except ImportError:  # moe_core used without the CLI package
        return "unknown"


def _excluded_prefixes(model: FusionModel) -> list[str]:
    text = model.config.text
    return [_TEXT_BACKBONE] if text.freeze else []


def save_checkpoint(
    path: str | Path,
    model: FusionModel,
    spec: FeatureSpec | str | None = None,
    stats: NormStats | None = None,
    *,
    spec_version: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``path/model.safetensors`` and ``path/config.json``; returns ``path``.

    ``spec`` is the feature spec trained with (or its version string; ``spec_version=``
    works too); ``stats`` the training-split normalisation statistics.
    """
    if isinstance(spec, FeatureSpec):
        spec_version = spec.version
    elif isinstance(spec, str):
        spec_version = spec
    if spec_version is None or stats is None:
        raise CheckpointError("save_checkpoint needs the feature spec (or its version) and stats")
    if stats.spec_version != spec_version:
        raise CheckpointError(
            f"NormStats belong to spec {stats.spec_version!r}, not {spec_version!r}"
        )
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    skip = _excluded_prefixes(model)
    weights = {
        k: v.detach().cpu().contiguous()
        for k, v in model.state_dict().items()
        if not any(k.startswith(p) for p in skip)
    }
    save_file(weights, str(out / WEIGHTS_FILE), metadata={"format": "moe-health"})
    text = model.config.text
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": model.kind,
        "model_config": model.config.to_dict(),
        "spec_version": spec_version,
        "combinations": [list(c) for c in model.config.moe.combinations],
        "expert_names": model.config.moe.expert_names(),
        "tasks": list(model.tasks),
        "norm_stats": stats.to_dict(),
        "package_version": _package_version(),
        "text_encoder": {
            "path": text.path,
            "name": Path(str(text.resolved_path())).parent.name
            if text.path is None
            else Path(text.path).name,
            "pooling": text.pooling,
            "stored_in_checkpoint": not text.freeze,
        },
        "excluded_prefixes": skip,
        "weights_sha256": hashlib.sha256((out / WEIGHTS_FILE).read_bytes()).hexdigest(),
        "saved_at": datetime.now(UTC).isoformat(),
        "metrics": dict(metrics or {}),
        "training": dict(metadata or {}),
    }
    (out / CONFIG_FILE).write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    return out


def _verify_weights(path: str | Path, weights_path: Path, meta: dict[str, Any]) -> None:
    """Refuse weights that are not the ones saved with this config (a partial copy, a
    file swapped by hand): the recorded SHA-256 must match."""
    expected = meta.get("weights_sha256")
    if not expected:
        return  # written before checksums were recorded
    h = hashlib.sha256()
    with weights_path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != expected:
        raise CheckpointError(
            f"{path}: {WEIGHTS_FILE} does not match the checksum recorded in {CONFIG_FILE} "
            f"(expected {str(expected)[:12]}…, found {h.hexdigest()[:12]}…); the folder was "
            "modified or copied incompletely"
        )


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint folder."""
    cfg = Path(path) / CONFIG_FILE
    if not cfg.is_file():
        raise CheckpointError(f"{path} is not a checkpoint folder: {CONFIG_FILE} missing")
    try:
        meta = orjson.loads(cfg.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise CheckpointError(f"{cfg} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg}: unsupported checkpoint format {meta.get('format_version')!r}"
        )
    return meta


def load_checkpoint(
    path: str | Path,
    *,
    spec: FeatureSpec | None = None,
    device: str | torch.device = "cpu",
    load_text_backbone: bool = True,
    text_backbone: nn.Module | None = None,
) -> LoadedCheckpoint:
    """Rebuild the model saved at ``path``.

    ``spec``: the running feature spec; a different version raises
    ``SpecMismatchError``. ``load_text_backbone=False`` skips the text transformer
    (the model then needs cached text embeddings).
    """
    meta = read_checkpoint_meta(path)
    spec_version = str(meta["spec_version"])
    if spec is not None and spec.version != spec_version:
        raise SpecMismatchError(
            f"checkpoint {path} was trained with feature spec {spec_version!r} but the "
            f"running spec is {spec.version!r}; use the matching spec or retrain"
        )
    config = ModelConfig.from_dict(meta["model_config"])
    if spec is not None and spec.n_features != config.ehr.n_features:
        raise SpecMismatchError(
            f"checkpoint expects {config.ehr.n_features} features, spec {spec.version!r} "
            f"has {spec.n_features}"
        )
    stored_text = bool(meta["text_encoder"]["stored_in_checkpoint"])
    config.text.load_backbone = load_text_backbone or stored_text or text_backbone is not None
    model = build_model(str(meta["kind"]), config, text_backbone=text_backbone)
    weights_path = Path(path) / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointError(f"{path}: {WEIGHTS_FILE} missing")
    _verify_weights(path, weights_path, meta)
    state = load_file(str(weights_path))
    result = model.load_state_dict(state, strict=False)
    skip = tuple(meta.get("excluded_prefixes", []))
    missing = [k for k in result.missing_keys if not k.startswith(skip)]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: weights do not fit the {meta['kind']!r} model: missing {missing[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]}"
        )
    model.to(torch.device(device)).eval()
    stats = NormStats.from_dict(meta["norm_stats"])
    if stats.spec_version != spec_version:
        raise SpecMismatchError(
            f"checkpoint {path}: its normalisation statistics belong to feature spec "
            f"{stats.spec_version!r}, its model to {spec_version!r}; the folder is inconsistent"
        )
    return LoadedCheckpoint(model, stats, spec_version, meta, dict(meta.get("metrics", {})))
