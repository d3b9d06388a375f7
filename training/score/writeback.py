"""``--write-back``: PUT RiskAssessments to the FHIR server in transaction Bundles.

Bundles are bounded (``batch_size`` entries) and each is retried with exponential
backoff on transport errors, 429 and 5xx (``fhir_adapters.client.RetryPolicy``, which
also honours ``Retry-After``). Entries are PUTs at deterministic ids, so a retried or
resumed write never creates duplicates.

A transaction is all-or-nothing, so one entry the server rejects (400, 409, 412, 422)
fails the whole Bundle: it is then split in halves, recursively, to write the good
entries and isolate the bad ones, with at most ``max_split_requests`` extra requests
per Bundle (enough to isolate one bad entry of a 100-entry Bundle). What still fails is
recorded with the chunk (``Chunk.write_back_failed``), committed to the ledger, sent
again by ``--resume`` (``retry``), and reported in the error file while pending; the
job then ends "partial", not "succeeded".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from training.score.run_store import Chunk, RunStore, WriteFailure

__all__ = ["SPLIT_STATUSES", "WriteBack"]

# HTTP answers that mean "the server refused what the Bundle contains": worth splitting.
# Others (401/403, 404, 429, 5xx, transport) would fail every half alike.
SPLIT_STATUSES = frozenset({400, 409, 412, 422})


@dataclass(slots=True)
class WriteBack:
    """Writes each committed chunk's RiskAssessments to ``client`` (a ``FhirClient``)."""

    client: Any  # fhir_adapters.client.FhirClient
    batch_size: int = 100
    max_split_requests: int = 16
    written: int = 0
    failed: int = 0
    bundles: int = 0  # transaction Bundles the server accepted
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"write-back batch size must be >= 1, got {self.batch_size}")

    def __call__(self, chunk: Chunk) -> None:
        """Send ``chunk.risk_assessments``; what fails goes to ``chunk.write_back_failed``."""
        chunk.write_back_failed.extend(self.send(chunk.risk_assessments))

    def send(self, resources: Sequence[dict[str, Any]]) -> list[WriteFailure]:
        """PUT ``resources`` in bounded Bundles; returns those the server did not take."""
        failures: list[WriteFailure] = []
        for batch in _batches(resources, self.batch_size):
            budget = [self.max_split_requests]
            failures.extend(self._send_bundle(batch, budget))
        return failures

    def retry(self, store: RunStore) -> int:
        """Send again the write-backs ``store``'s ledger has pending; returns how many."""
        tried = 0
        for batch in _batches(store.pending_risk_assessments(), self.batch_size):
            failures = self.send(batch)
            failed_ids = {f.id for f in failures}
            store.record_write_back(
                [str(r["id"]) for r in batch if r["id"] not in failed_ids], failures
            )
            tried += len(batch)
        return tried

    def _send_bundle(
        self, resources: Sequence[dict[str, Any]], budget: list[int]
    ) -> list[WriteFailure]:
        """One transaction; a rejected one is split while ``budget`` (requests) lasts."""
        from fhir_adapters.client import FhirClientError, FhirHTTPError
        from fhir_adapters.risk_assessment import transaction_bundle

        try:
            self.client.transaction(transaction_bundle(resources))
        except FhirClientError as exc:
            splittable = isinstance(exc, FhirHTTPError) and exc.status in SPLIT_STATUSES
            if splittable and len(resources) > 1 and budget[0] >= 2:
                budget[0] -= 2
                half = len(resources) // 2
                return [
                    *self._send_bundle(resources[:half], budget),
                    *self._send_bundle(resources[half:], budget),
                ]
            detail = f"{type(exc).__name__}: {exc}"[:500]
            self.errors.append(detail)
            self.failed += len(resources)
            return [WriteFailure(str(r["id"]), _patient_id(r), detail) for r in resources]
        self.bundles += 1
        self.written += len(resources)
        return []


def _patient_id(resource: dict[str, Any]) -> str:
    from fhir_adapters.references import patient_id_of

    return patient_id_of(resource) or ""


def _batches(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch
