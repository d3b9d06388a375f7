"""Cards from a prediction: a pure function, no I/O, no model, no FHIR parsing.

**One card per task, not one combined card.** Each outcome has its own threshold and
therefore its own ``indicator``; one combined card would carry the maximum indicator and
hide which outcome drives it, so an EHR could neither sort nor filter by it and a
clinician could not accept one estimate (write it back) while overriding another. One
card per task also makes feedback interpretable per outcome (override rates per task are
what calibration reviews ask for). Alert load stays low because only warning/critical
cards are meant to interrupt: ``info`` cards are what EHRs show collapsed. The order of
the cards is the service's order of tasks (readmission first at discharge).

The model abstaining gives no cards at all (the caller logs the reason).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cds_hooks.config import RiskThresholds
from cds_hooks.prediction import ModelInfo, PredictionView
from moe_core.modalities import Modality, Task

__all__ = [
    "EXPLANATION_EXTENSION",
    "INDICATORS",
    "OVERRIDE_REASONS",
    "OVERRIDE_REASON_SYSTEM",
    "CardSet",
    "RiskAssessmentBuilder",
    "build_cards",
    "format_percent",
    "indicator_for",
    "untrained_modalities",
]

INDICATORS = ("info", "warning", "critical")  # increasing urgency (CDS Hooks 2.0)
SUMMARY_MAX = 139  # the spec: "<140-character summary"
OVERRIDE_REASON_SYSTEM = "urn:moe-health:cds:override-reason"
OVERRIDE_REASONS: tuple[tuple[str, str], ...] = (
    ("already-aware", "Already aware of this risk and acting on it"),
    ("data-incomplete", "Record incomplete or data wrong for this admission"),
    ("not-applicable", "Not applicable to this patient (e.g. comfort care)"),
    ("disagree", "Clinical judgement differs from the estimate"),
)
TOPIC_SYSTEM = "urn:moe-health:cds:task"
# Card extension (the spec reserves ``extension``) with the explanation as data, for EHRs
# that chart it (the demo page draws the gate weights from it).
EXPLANATION_EXTENSION = "org.moe-health.explanation"
_LEVEL_WORDS = {"info": "lower", "warning": "elevated", "critical": "high"}
# Plain words for modalities and the one-letter expert names (E, T, I).
_MODALITY_WORDS = {
    Modality.EHR.name: "vitals & labs",
    Modality.TEXT.name: "clinical notes",
    Modality.IMAGE.name: "chest X-ray",
}
_LETTER_WORDS = {m.letter: _MODALITY_WORDS[m.name] for m in Modality}

RiskAssessmentBuilder = Callable[[PredictionView, Task], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class CardSet:
    """The response body parts: cards, and system actions when write-back was asked."""

    cards: list[dict[str, Any]] = field(default_factory=list)
    system_actions: list[dict[str, Any]] = field(default_factory=list)

    def response(self) -> dict[str, Any]:
        body: dict[str, Any] = {"cards": self.cards}
        if self.system_actions:  # optional arrays are omitted, never empty
            body["systemActions"] = self.system_actions
        return body


def format_percent(p: float) -> str:
    """``0.234`` -> ``"23%"``; tiny and near-certain values keep their bound visible."""
    if p < 0.01:
        return "<1%"
    if p > 0.99:
        return ">99%"
    return f"{round(100 * p)}%"


def indicator_for(risk: float, thresholds: RiskThresholds) -> str:
    """``info`` / ``warning`` / ``critical`` from the task's thresholds."""
    if risk >= thresholds.critical:
        return "critical"
    if risk >= thresholds.warning:
        return "warning"
    return "info"


def expert_words(name: str) -> str:
    """``"E+T"`` -> ``"vitals & labs + clinical notes"``; other names unchanged."""
    parts = name.split("+")
    if all(p in _LETTER_WORDS for p in parts):
        return " + ".join(_LETTER_WORDS[p] for p in parts)
    return name


def untrained_modalities(
    used: Sequence[str], trained_combinations: Sequence[Sequence[str]]
) -> tuple[str, ...]:
    """Used modalities that no expert saw in training (none when combinations are unknown).

    The gate still routes such a patient to the trained experts, so the estimate stands,
    but a clinician should know it rests on data the model never learned from.
    """
    if not trained_combinations:
        return ()
    trained = {m for combo in trained_combinations for m in combo}
    return tuple(m for m in used if m not in trained)


def _untrained_text(
    untrained: Sequence[str], trained_combinations: Sequence[Sequence[str]]
) -> str:
    words = " and ".join(_MODALITY_WORDS.get(m, m) for m in untrained)
    combos = "; ".join(
        " + ".join(_MODALITY_WORDS.get(m, m) for m in combo) for combo in trained_combinations
    )
    return (
        f"**Note:** {words} {'was' if len(untrained) == 1 else 'were'} not part of any "
        f"data combination this model was trained with ({combos}); the model combined "
        "its trained experts for this patient."
    )


def _summary(task: Task, risk: float, indicator: str, synthetic: bool) -> str:
    text = f"{task.title} risk {format_percent(risk)} ({_LEVEL_WORDS[indicator]})"
    if synthetic:
        text += " - synthetic demo model"
    return text[:SUMMARY_MAX]


def _detail(
    view: PredictionView, task: Task, risk: float, thresholds: RiskThresholds, model: ModelInfo
) -> str:
    lines = [
        f"**Estimated risk: {format_percent(risk)}** ({task.title.lower()}). "
        f"Thresholds: warning at {format_percent(thresholds.warning)}, "
        f"critical at {format_percent(thresholds.critical)}.",
        "",
    ]
    pop = model.population.get(task.key)
    if pop is not None:
        rate = format_percent(pop.prevalence)
        comparison = f"In the training population the outcome rate was {rate}"
        pct = pop.percentile(risk)
        if pct is not None:
            comparison += f"; this estimate is higher than {pct}% of training admissions"
        lines += [comparison + ".", ""]

    start = view.window_start.strftime("%Y-%m-%d %H:%M")
    end = view.window_end.strftime("%Y-%m-%d %H:%M")
    window_h = max(0, round((view.window_end - view.window_start).total_seconds() / 3600))
    lines += [
        f"**Data window:** {start} to {end} UTC ({window_h} h); "
        f"measurements in {view.hours_covered} of those hours.",
        "",
        "**Data used:**",
    ]
    counts = {
        Modality.EHR.name: f"{view.n_events} measurements",
        Modality.TEXT.name: f"{view.n_notes} note(s)",
        Modality.IMAGE.name: f"{view.n_images} image(s)",
    }
    for m in Modality:
        word = _MODALITY_WORDS[m.name]
        if m.name in view.modalities_used:
            lines.append(f"- {word}: used ({counts[m.name]})")
        else:
            lines.append(f"- {word}: missing (the model used its learned stand-in)")
    lines.append("")
    untrained = untrained_modalities(view.modalities_used, model.trained_combinations)
    if untrained:
        lines += [_untrained_text(untrained, model.trained_combinations), ""]

    top = sorted(view.gate_weights.items(), key=lambda kv: kv[1], reverse=True)
    top = [(n, w) for n, w in top if w > 0.005][:3]
    if top:
        parts = [f"the {expert_words(n)} expert ({format_percent(w)})" for n, w in top]
        lines += ["**How the model weighed the data:** " + ", ".join(parts) + ".", ""]

    if view.quality_notes:
        lines.append("**Data quality:**")
        lines += [f"- {note}" for note in view.quality_notes[:10]]
        if len(view.quality_notes) > 10:
            lines.append(f"- ... and {len(view.quality_notes) - 10} more")
        lines.append("")
    if model.synthetic:
        lines.append(
            "> This model was trained on **synthetic** patients. It is a demonstration "
            "and **not for clinical use**."
        )
    return "\n".join(lines).rstrip() + "\n"


def _create_action(
    view: PredictionView, task: Task, build: RiskAssessmentBuilder
) -> dict[str, Any]:
    return {
        "type": "create",
        "description": f"Record the {task.title.lower()} risk estimate as a FHIR RiskAssessment",
        "resource": build(view, task),
    }


def _explanation(view: PredictionView, task: Task, risk: float) -> dict[str, Any]:
    return {
        "task": task.key,
        "risk": round(risk, 6),
        "gateWeights": {k: round(v, 6) for k, v in view.gate_weights.items()},
        "modalitiesUsed": list(view.modalities_used),
        "modalitiesMissing": list(view.modalities_missing),
        "hoursCovered": view.hours_covered,
    }


def build_cards(
    view: PredictionView,
    *,
    model: ModelInfo,
    thresholds: Mapping[str, RiskThresholds],
    tasks: Sequence[Task],
    risk_assessment: RiskAssessmentBuilder,
    writeback: bool = False,
) -> CardSet:
    """Cards for ``tasks`` (in that order); no cards when the model abstained."""
    if view.abstain_reason is not None or not view.risks:
        return CardSet()
    cards: list[dict[str, Any]] = []
    actions: list[dict[str, Any]] = []
    for task in tasks:
        if task.key not in view.risks:
            continue
        risk = float(view.risks[task.key])
        th = thresholds[task.key]
        indicator = indicator_for(risk, th)
        action = _create_action(view, task, risk_assessment)
        cards.append(
            {
                "uuid": str(uuid.uuid4()),
                "summary": _summary(task, risk, indicator, model.synthetic),
                "indicator": indicator,
                "detail": _detail(view, task, risk, th, model),
                "source": {
                    "label": f"{model.name} {model.version}",
                    "url": model.card_url,
                    "topic": {"system": TOPIC_SYSTEM, "code": task.key, "display": task.title},
                },
                "suggestions": [
                    {
                        "label": "Record this estimate in the chart (RiskAssessment)",
                        "uuid": str(uuid.uuid4()),
                        "actions": [action],
                    }
                ],
                "selectionBehavior": "at-most-one",
                "overrideReasons": [
                    {"code": code, "system": OVERRIDE_REASON_SYSTEM, "display": display}
                    for code, display in OVERRIDE_REASONS
                ],
                "extension": {EXPLANATION_EXTENSION: _explanation(view, task, risk)},
            }
        )
        if writeback:
            actions.append(action)
    return CardSet(cards=cards, system_actions=actions)
