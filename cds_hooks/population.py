"""Training-population statistics for the cards ("how this risk compares").

For each task: the observed outcome rate and the 1st..99th percentiles of the model's
predicted risk over a cohort's admissions (for the demo: the synthetic cohort the model
was built from), written beside the checkpoint as
``population.json``::

    python -m cds_hooks.population --cohort /tmp/demo-cohort --model cds_hooks/model/demo
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from cds_hooks.model_service import POPULATION_FILE
from moe_core.modalities import Task

__all__ = ["population_stats", "write_population"]


def population_stats(
    risks: Mapping[str, Sequence[float]], labels: Mapping[str, Sequence[bool | None]]
) -> dict[str, Any]:
    """``{task: {"prevalence", "quantiles" (99 values), "n"}}`` from risks and known labels."""
    out: dict[str, Any] = {}
    for task in Task:
        r = np.asarray(risks.get(task.key, ()), dtype=np.float64)
        known = [bool(v) for v in labels.get(task.key, ()) if v is not None]
        if r.size == 0 or not known:
            continue
        out[task.key] = {
            "prevalence": round(float(np.mean(known)), 6),
            "quantiles": [round(float(q), 6) for q in np.quantile(r, np.arange(1, 100) / 100)],
            "n": int(r.size),
        }
    return out


def write_population(cohort: Path, model: Path) -> Path:
    """Score every admission of a synthetic NDJSON cohort and write ``population.json``."""
    from fhir_adapters.ndjson import group_by_patient
    from fhir_adapters.record import build_patient_records
    from moe_core.inference import Predictor

    predictor = Predictor.from_checkpoint(model)
    risks: dict[str, list[float]] = {t.key: [] for t in Task}
    labels: dict[str, list[bool | None]] = {t.key: [] for t in Task}
    batch = []
    for pid, resources in group_by_patient(cohort):
        batch.extend(build_patient_records(pid, resources))
    for pred, record in zip(predictor.predict(batch), batch, strict=True):
        if pred.risks is None:
            continue
        for task in Task:
            if task.key in pred.risks:
                risks[task.key].append(float(pred.risks[task.key]))
                labels[task.key].append(getattr(record.labels, task.key))
    folder = model if model.is_dir() else model.parent
    path = folder / POPULATION_FILE
    path.write_bytes(orjson.dumps(population_stats(risks, labels), option=orjson.OPT_INDENT_2))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--cohort", type=Path, required=True, help="moe-health synth output")
    parser.add_argument("--model", type=Path, required=True, help="checkpoint folder")
    args = parser.parse_args(argv)
    print(f"wrote {write_population(args.cohort, args.model)}")


if __name__ == "__main__":
    main()
