"""moe-health: MoE-Health risk predictions for FHIR systems (CDS Hooks, batch, training)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
