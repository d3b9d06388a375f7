"""Markdown model card rendered from a checkpoint's ``config.json``.

Facts come from the checkpoint (kind, experts, encoders, spec version, checksum,
metrics, training metadata); the intended-use and limitation sections are fixed text
plus warnings derived from those facts (random image encoder, synthetic data, no
metrics recorded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from moe_core.modalities import Task

__all__ = ["render_model_card"]

_ARCHITECTURE = {
    "moe": "MoE-Health (Wang & Yang, arXiv 2508.21793): modality encoders, learned "
    "missing-modality embeddings, one expert per modality combination, a gating network "
    "with top-k routing and a load-balancing loss.",
    "medfuse": "MedFuse (Hayat et al., MLHC 2022): an LSTM over the available modality embeddings.",
    "early": "Early fusion: one MLP over concatenated input-level features.",
    "joint": "Joint fusion: one MLP over concatenated, jointly trained encoder outputs.",
    "late": "Late fusion: the mean of per-modality predictions over available modalities.",
    "unimodal": "A single-modality model: one encoder and a linear head.",
}
_TASK_TITLES = {t.key: t.title for t in Task}


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.extend(_flatten(value, f"{name}."))
        else:
            rows.append((name, value))
    return rows


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return orjson.dumps(value).decode()
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(rows: list[tuple[str, Any]], head: tuple[str, str]) -> list[str]:
    out = [f"| {head[0]} | {head[1]} |", "| --- | --- |"]
    out.extend(f"| {_cell(k)} | {_cell(v)} |" for k, v in rows)
    return out


def render_model_card(meta: Mapping[str, Any], title: str | None = None) -> str:
    """The Markdown card for a checkpoint's parsed ``config.json``."""
    cfg = meta["model_config"]
    kind = str(meta["kind"])
    tasks = [str(t) for t in meta.get("tasks", cfg.get("tasks", []))]
    training = dict(meta.get("training", {}))
    metrics = dict(meta.get("metrics", {}))
    text = meta.get("text_encoder", {})
    image_weights = cfg.get("image", {}).get("state_dict_path")
    synthetic = "synth" in orjson.dumps(training).decode().lower()
    name = title or str(training.get("name") or f"MoE-Health {kind} model")

    lines = [f"# Model card: {name}", ""]
    if synthetic:
        lines += [
            "> **Trained on synthetic data. Not for clinical use.**",
            "",
        ]
    lines += [
        "## Summary",
        "- **Predicts:** " + "; ".join(_TASK_TITLES.get(t, t) for t in tasks) + ".",
        "- **Inputs:** the first 48 h of an admission: vitals/labs with demographics, "
        "clinical notes written before the prediction time, the first frontal chest X-ray; "
        "whichever are present.",
        f"- **Architecture:** {_ARCHITECTURE.get(kind, kind)}",
        f"- **Model kind:** `{kind}` · **package version:** {meta.get('package_version')} "
        f"· **saved:** {meta.get('saved_at')}",
        f"- **Feature spec version:** `{meta.get('spec_version')}` · **weights SHA-256:** "
        f"`{meta.get('weights_sha256')}`",
        "",
    ]
    if kind == "moe":
        moe = cfg["moe"]
        lines += [
            "## Experts and routing",
            f"- Experts: {', '.join(meta.get('expert_names', []))} "
            f"({moe['experts']}; gating: {moe['gating']}; top-k: {moe['top_k']}; "
            f"missing modalities: {moe['missing']} embeddings).",
            f"- Shared width d_h = {cfg['d_h']}; balance-loss weight alpha = {moe['alpha']}.",
            "",
        ]
    lines += [
        "## Encoders",
        f"- **Notes:** `{text.get('name')}` ({text.get('pooling')} pooling"
        f"{', fine-tuned' if text.get('stored_in_checkpoint') else ', frozen'}), loaded "
        f"from a local folder{'' if text.get('path') is None else ': ' + str(text.get('path'))}.",
        "- **Chest X-ray:** DenseNet-121 "
        + (
            f"initialised from the local weights `{image_weights}`."
            if image_weights
            else "**initialised randomly** (no pretrained weights); image features are "
            "only what training taught the model."
        ),
        "",
        "## Training data",
    ]
    lines += (
        _table(_flatten(training), ("item", "value"))
        if training
        else ["No training metadata was recorded in this checkpoint."]
    )
    lines += ["", "## Evaluation"]
    lines += (
        _table(_flatten(metrics), ("metric", "value"))
        if metrics
        else [
            "No evaluation metrics were recorded in this checkpoint; evaluate it "
            "(`moe-health evaluate`) before any use."
        ]
    )
    lines += [
        "",
        "## Intended use",
        "Decision support for clinicians reviewing adult inpatient admissions (CDS Hooks "
        "`patient-view` / `encounter-discharge`) and population-level risk screening of "
        "FHIR exports. The estimates inform prioritisation and discharge planning; they do "
        "not replace clinical judgement and must not be used to withhold care.",
        "",
        "## Limitations",
        "- Performance outside the training population (other hospitals, coding practices, "
        "devices) is unknown until measured locally.",
        "- A record with no measurements, notes or frontal X-ray before the prediction time "
        "gets no risk: the model abstains and says why.",
        "- Missing modalities are handled, but risks from fewer modalities are less certain; "
        "each prediction lists the modalities used and missing.",
    ]
    if not image_weights:
        lines.append("- The image encoder has no pretrained weights.")
    if synthetic:
        lines.append("- Trained on synthetic patients: relationships are the generator's.")
    if not metrics:
        lines.append("- No evaluation results are attached to this checkpoint.")
    lines.append("")
    return "\n".join(lines)
