"""Batch scoring of FHIR Bulk exports (``moe-health score``), locally or on Ray.

``pipeline`` holds the engine-agnostic stages, ``local`` and ``ray_engine`` run them,
``sources`` groups a Bulk NDJSON export by patient, ``run_store`` writes committed
outputs with a resume ledger, ``embedding_store`` caches note/image embeddings.
"""

__all__: list[str] = []
