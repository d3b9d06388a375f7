"""``--write-back``: POST RiskAssessments to the FHIR server as transaction Bundles.

Bundles are bounded (``batch_size`` entries) and each is retried with exponential
backoff on transport errors, 429 and 5xx (``fhir_adapters.client.RetryPolicy``, which
also honours ``Retry-After``). Entries are PUTs at deterministic ids, so a retried or
resumed write never creates duplicates. A bundle that still fails is reported as a
failure of its patients; the run goes on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from training.score import keys
from training.score.run_store import Chunk

__all__ = ["WriteBack"]


@dataclass(slots=True)
class WriteBack:
    """Writes each committed chunk's RiskAssessments to ``client`` (a ``FhirClient``)."""

    client: Any  # fhir_adapters.client.FhirClient
    batch_size: int = 100
    written: int = 0
    failed: int = 0
    bundles: int = 0
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"write-back batch size must be >= 1, got {self.batch_size}")

    def __call__(self, chunk: Chunk) -> None:
        """Send ``chunk.risk_assessments``; failures go to the chunk's error lines."""
        ras = chunk.risk_assessments
        for start in range(0, len(ras), self.batch_size):
            self._send(ras[start : start + self.batch_size], chunk)

    def _send(self, resources: Sequence[dict[str, Any]], chunk: Chunk) -> None:
        from fhir_adapters.client import FhirClientError
        from fhir_adapters.risk_assessment import transaction_bundle

        try:
            self.client.transaction(transaction_bundle(resources))
        except FhirClientError as exc:
            self.failed += len(resources)
            detail = f"{type(exc).__name__}: {exc}"[:500]
            self.errors.append(detail)
            for res in resources:
                chunk.errors.append(
                    {
                        "reason": keys.REASON_WRITE_BACK_FAILED,
                        "patient_id": str(res["subject"]["reference"]).rsplit("/", 1)[-1],
                        "source": f"RiskAssessment/{res['id']}",
                        "detail": detail,
                    }
                )
            chunk.counts.failures += len(resources)
            return
        self.bundles += 1
        self.written += len(resources)
