"""Checkpoints shipped with the service (see README.md)."""
