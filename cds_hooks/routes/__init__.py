"""One router per resource: discovery, hook calls, feedback, health, demo + model card."""

from cds_hooks.routes import demo, discovery, feedback, health, hooks

__all__ = ["demo", "discovery", "feedback", "health", "hooks"]
