"""The CDS Hooks 2.0 service: discovery, ``patient-view`` / ``encounter-discharge`` hooks,
feedback, JWT client authentication, persistence, and the demo EHR page.

Entry points: ``cds_hooks.main.create_app`` (the FastAPI app) and ``moe-health serve``.
Batch jobs are recorded through ``cds_hooks.db.Repository.record_job``.
"""

__all__: list[str] = []
