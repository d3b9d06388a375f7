"""Small hand-made specs and records for the model-core tests."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from moe_core.batch import ModalityBatch
from moe_core.config import ModelConfig, MoEConfig
from moe_core.encoders.ehr import EHREncoderConfig
from moe_core.encoders.image import DENSENET_FEATURES
from moe_core.encoders.text import TextEncoderConfig, default_text_encoder_path
from moe_core.feature_spec import FeatureDef, FeatureSpec, NormStats
from moe_core.features import STATIC_CATEGORICAL, WINDOW_HOURS
from moe_core.modalities import AVAILABILITY_PATTERNS
from moe_core.records import (
    UNKNOWN,
    Demographics,
    Event,
    ImageRef,
    Labels,
    Note,
    PatientRecord,
)

T0 = datetime(2150, 3, 1, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def tiny_spec(version: str = "test-1") -> FeatureSpec:
    """Two features and the four static vocabularies."""
    return FeatureSpec(
        version=version,
        features=(
            FeatureDef("heart_rate", "Heart rate", "/min", ("8867-4",), (220045,), (0, 350)),
            FeatureDef("glucose", "Glucose", "mg/dL", ("2345-7",), (50931,), (0, 3000)),
        ),
        static_categories={
            "sex": (UNKNOWN, "female", "male"),
            "race": (UNKNOWN, "white", "black"),
            "ethnicity": (UNKNOWN, "hispanic", "not_hispanic"),
            "admission_type": (UNKNOWN, "emergency", "elective"),
        },
    )


def make_record(
    key: str = "enc-1",
    *,
    ehr: bool = True,
    text: bool = True,
    image: bool = True,
    hours: float = 48,
    labels: Labels | None = None,
) -> PatientRecord:
    """A record with the requested modalities, prediction time ``hours`` after admission."""
    pred = T0 + timedelta(hours=hours)
    events = (
        [Event(T0 + 0.5 * HOUR, "heart_rate", 80.0), Event(T0 + 2.5 * HOUR, "glucose", 110.0)]
        if ehr
        else []
    )
    notes = [Note(T0 + HOUR, "nursing", f"patient {key} comfortable, no distress")] if text else []
    rng = np.random.default_rng(sum(map(ord, key)))
    images = (
        [
            ImageRef(
                T0 + HOUR,
                "AP",
                f"study-{key}",
                pixels=rng.random((40, 32), dtype=np.float32),
            )
        ]
        if image
        else []
    )
    return PatientRecord(
        patient_id=f"p-{key}",
        encounter_id=key,
        anchor_time=T0,
        prediction_time=pred,
        static=Demographics(age=70.0, sex="female", race="white", admission_type="emergency"),
        events=events,
        notes=notes,
        images=images,
        labels=labels or Labels(mortality=False, long_los=True, readmission=None),
    )


@pytest.fixture
def spec() -> FeatureSpec:
    return tiny_spec()


@pytest.fixture
def stats(spec: FeatureSpec) -> NormStats:
    return NormStats(spec.version, (80.0, 100.0), (10.0, 20.0), 60.0, 10.0)


# --------------------------------------------------------------------------- models

D_H = 8
N_FEATURES = 3
TEXT_DIM = 16  # hidden size of the tiny BERT
CARDS = (3, 3, 3, 3)
ALL_ROWS: list[tuple[bool, bool, bool]] = [*AVAILABILITY_PATTERNS, (False, False, False)]


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer, 16-wide BERT saved as a local HF folder with the default tokenizer."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=TEXT_DIM,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(cfg).save_pretrained(str(folder))
    src = default_text_encoder_path()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copy(src / name, folder / name)
    return folder


def tiny_config(text_dir: Path | None = None, **moe: object) -> ModelConfig:
    """A model config with tiny widths; text backbone not loaded unless ``text_dir``."""
    return ModelConfig(
        ehr=EHREncoderConfig(N_FEATURES, CARDS, cat_dim=2, lstm_hidden=4),
        d_h=D_H,
        text=TextEncoderConfig(
            path=str(text_dir) if text_dir else None,
            input_dim=TEXT_DIM,
            load_backbone=text_dir is not None,
        ),
        moe=MoEConfig(expert_hidden=8, gate_hidden=8, **moe),  # type: ignore[arg-type]
        fusion_hidden=8,
    )


def make_batch(
    rows: list[tuple[bool, bool, bool]] | None = None,
    *,
    cached: bool = True,
    seed: int = 0,
    seq_len: int = 6,
) -> ModalityBatch:
    """A random batch with the given availability rows (default: all 7 + all-missing)."""
    rows = ALL_ROWS if rows is None else rows
    g = torch.Generator().manual_seed(seed)
    b = len(rows)
    present = torch.tensor(rows, dtype=torch.bool)
    ehr_on = present[:, 0].float().view(b, 1, 1)
    mask = (torch.rand(b, WINDOW_HOURS, N_FEATURES, generator=g) < 0.3).float() * ehr_on
    extra: dict[str, torch.Tensor] = {}
    if cached:
        extra["text_emb"] = torch.randn(b, TEXT_DIM, generator=g) * present[:, 1:2]
        extra["image_emb"] = torch.rand(b, DENSENET_FEATURES, generator=g) * present[:, 2:3]
    else:
        extra["text_ids"] = torch.randint(1000, 2000, (b, seq_len), generator=g)
        extra["text_ids"][:, 0] = 101
        extra["text_mask"] = torch.ones(b, seq_len, dtype=torch.long)
        extra["image"] = torch.randn(b, 3, 32, 32, generator=g)
    return ModalityBatch(
        ehr_static_num=torch.randn(b, 1, generator=g),
        ehr_static_num_mask=torch.ones(b, 1),
        ehr_static_cat=torch.randint(0, 3, (b, len(STATIC_CATEGORICAL)), generator=g),
        ehr_values=torch.randn(b, WINDOW_HOURS, N_FEATURES, generator=g) * mask,
        ehr_mask=mask,
        present=present,
        labels=torch.randint(0, 2, (b, 3), generator=g).float(),
        label_mask=torch.ones(b, 3, dtype=torch.bool),
        keys=[f"row{i}" for i in range(b)],
        **extra,
    )
