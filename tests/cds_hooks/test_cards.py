"""Cards from a prediction: fields, indicators, wording, abstention, write-back."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cds_hooks.cards import (
    build_cards,
    expert_words,
    format_percent,
    indicator_for,
    untrained_modalities,
)
from cds_hooks.config import RiskThresholds, Settings
from cds_hooks.prediction import ModelInfo, PopulationStats, PredictionView
from moe_core.modalities import Task
from tests.cds_hooks.card_spec import assert_valid_card

T0 = datetime(2026, 1, 1, 8, tzinfo=UTC)
TASKS = (Task.MORTALITY, Task.LONG_LOS, Task.READMISSION)


def _view(**over: Any) -> PredictionView:
    base: dict[str, Any] = dict(
        patient_ref="Patient/p1",
        encounter_ref="Encounter/e1",
        risks={"mortality": 0.42, "long_los": 0.05, "readmission": 0.22},
        gate_weights={"E+T": 0.7, "E": 0.2, "T": 0.1},
        modalities_used=("EHR", "TEXT"),
        modalities_missing=("IMAGE",),
        window_start=T0,
        window_end=T0 + timedelta(hours=48),
        hours_covered=31,
        n_events=412,
        n_notes=2,
        n_images=0,
        quality_notes=("unknown code (LOINC 9999-9)",),
    )
    base.update(over)
    return PredictionView(**base)


MODEL = ModelInfo(
    name="MoE-Health demo",
    version="0.1.0",
    card_url="http://127.0.0.1:8080/model-card",
    synthetic=True,
    population={
        "mortality": PopulationStats(0.1, tuple(i / 100 for i in range(1, 100))),
    },
)


def _ra(view: PredictionView, task: Task) -> dict[str, Any]:
    return {"resourceType": "RiskAssessment", "status": "final", "code": {"text": task.key}}


def _cards(view: PredictionView, writeback: bool = False) -> Any:
    return build_cards(
        view,
        model=MODEL,
        thresholds=Settings().thresholds,
        tasks=TASKS,
        risk_assessment=_ra,
        writeback=writeback,
    )


def test_one_valid_card_per_task_in_service_order() -> None:
    cs = _cards(_view())
    assert len(cs.cards) == 3
    for card in cs.cards:
        assert_valid_card(card)
    assert [c["source"]["topic"]["code"] for c in cs.cards] == [t.key for t in TASKS]
    assert len({c["uuid"] for c in cs.cards}) == 3


def test_summary_states_risk_as_percentage() -> None:
    card = _cards(_view()).cards[0]
    assert "42%" in card["summary"]
    assert card["summary"].startswith("In-hospital mortality")


def test_indicator_follows_configured_thresholds() -> None:
    th = RiskThresholds(warning=0.2, critical=0.4)
    assert indicator_for(0.19, th) == "info"
    assert indicator_for(0.2, th) == "warning"
    assert indicator_for(0.4, th) == "critical"
    cards = _cards(_view()).cards
    assert [c["indicator"] for c in cards] == ["critical", "info", "warning"]


def test_thresholds_out_of_order_are_refused() -> None:
    with pytest.raises(ValueError, match="must not exceed"):
        RiskThresholds(warning=0.5, critical=0.2)


def test_detail_explains_modalities_experts_window_and_population() -> None:
    detail = _cards(_view()).cards[0]["detail"]
    assert "chest X-ray: missing" in detail
    assert "clinical notes: used (2 note(s))" in detail
    assert "vitals & labs + clinical notes expert (70%)" in detail
    assert "48 h" in detail and "31 of those hours" in detail
    assert "outcome rate was 10%" in detail and "higher than" in detail
    assert "unknown code" in detail
    assert "not for clinical use" in detail


def test_abstention_gives_no_cards() -> None:
    cs = _cards(_view(risks={}, abstain_reason="no usable EHR data"))
    assert cs.cards == [] and cs.response() == {"cards": []}


def test_system_actions_only_when_writeback_is_asked() -> None:
    assert "systemActions" not in _cards(_view()).response()
    body = _cards(_view(), writeback=True).response()
    assert len(body["systemActions"]) == 3
    assert all(a["type"] == "create" for a in body["systemActions"])
    assert body["systemActions"][0]["resource"]["resourceType"] == "RiskAssessment"


def test_percent_formatting_keeps_extremes_visible() -> None:
    assert format_percent(0.004) == "<1%"
    assert format_percent(0.996) == ">99%"
    assert format_percent(0.126) == "13%"


def test_expert_names_in_plain_words() -> None:
    assert expert_words("E+T+I") == "vitals & labs + clinical notes + chest X-ray"
    assert expert_words("expert-3") == "expert-3"


def test_summary_stays_under_140_characters_for_every_task() -> None:
    for task in Task:
        view = _view(risks={task.key: 0.999})
        for card in _cards(view).cards:
            assert len(card["summary"]) < 140


def _cards_with(view: PredictionView, combos: tuple[tuple[str, ...], ...]) -> Any:
    model = dataclasses.replace(MODEL, trained_combinations=combos)
    return build_cards(
        view, model=model, thresholds=Settings().thresholds, tasks=TASKS, risk_assessment=_ra
    )


def test_detail_names_training_combinations_when_a_used_modality_was_never_trained() -> None:
    view = _view(modalities_used=("EHR", "IMAGE"), modalities_missing=("TEXT",), n_images=1)
    cards = _cards_with(view, (("EHR", "TEXT"), ("EHR",))).cards
    for card in cards:
        assert (
            "chest X-ray was not part of any data combination this model was trained with "
            "(vitals & labs + clinical notes; vitals & labs)"
        ) in card["detail"]
    assert untrained_modalities(("EHR", "IMAGE", "TEXT"), (("EHR",),)) == ("IMAGE", "TEXT")


@pytest.mark.parametrize(
    "combos",
    [(("EHR", "TEXT"), ("IMAGE",)), ()],
    ids=["every-used-modality-trained", "combinations-unknown"],
)
def test_no_training_note_when_not_warranted(combos: tuple[tuple[str, ...], ...]) -> None:
    view = _view(modalities_used=("EHR", "IMAGE"), modalities_missing=("TEXT",), n_images=1)
    for card in _cards_with(view, combos).cards:
        assert "not part of any data combination" not in card["detail"]
