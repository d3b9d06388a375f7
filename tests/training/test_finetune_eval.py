"""Evaluating an end-to-end fine-tuned checkpoint runs its own (trained) encoders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moe_core.checkpoint import load_checkpoint
from moe_core.encoders.text import load_tokenizer
from moe_core.feature_catalog import DEFAULT_SPEC
from moe_core.features import RecordFeaturizer
from tests.training.conftest import TINY
from training import predict
from training.cohort_store import read_records
from training.data import RecordSplit
from training.evaluate import EvalConfig, fine_tuned, run_evaluation
from training.splits import TEST
from training.train import TrainConfig, run_training


@pytest.mark.slow
def test_fine_tuned_checkpoint_is_evaluated_on_tokens_and_pixels(
    synth_cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = TrainConfig(epochs=1, pretrain_epochs=0, fine_tune=True, seed=5, **TINY)
    result = run_training(synth_cohort, tmp_path / "run", cfg)
    loaded = load_checkpoint(result.checkpoint, spec=DEFAULT_SPEC, load_text_backbone=False)
    model = loaded.model
    assert fine_tuned(model) and not model.config.text.freeze

    seen: list[Any] = []
    real = predict.predict_split

    def spy(m: Any, split: Any, device: Any, batch_size: int = 256) -> predict.Predictions:
        out = real(m, split, device, batch_size)
        seen.append(out)
        return out

    monkeypatch.setattr(predict, "predict_split", spy)
    run_evaluation(synth_cohort, result.checkpoint, tmp_path / "report",
                   EvalConfig(n_bootstrap=0, device="cpu", progress=False))  # fmt: skip
    evaluated = seen[-1]  # validation first, then test

    # Reference: the fine-tuned encoders on tokens and pixels, as in training.
    featurizer = RecordFeaturizer(DEFAULT_SPEC, loaded.stats, tokenizer=load_tokenizer(None),
                                  max_tokens=TINY["max_tokens"])  # fmt: skip
    split = RecordSplit(list(read_records(synth_cohort, TEST)), featurizer)
    assert any(r.present[1] for r in split.records)  # test admissions with notes
    reference = real(model, split, next(model.parameters()).device)
    assert evaluated.keys == reference.keys
    np.testing.assert_allclose(evaluated.probs, reference.probs, rtol=1e-5, atol=1e-6)
    report = json.loads((tmp_path / "report" / "evaluation.json").read_text())
    assert report["tasks"]["mortality"]["n"] > 0
