"""CDS Hooks 2.0 card rules, checked field by field (used by several tests)."""

from __future__ import annotations

import uuid
from typing import Any

INDICATORS = {"info", "warning", "critical"}


def assert_valid_card(card: dict[str, Any]) -> None:
    """Every rule the spec states for a Card, its Source, Suggestions and Actions."""
    for key, value in card.items():  # no null / empty values anywhere at the top level
        assert value not in (None, "", [], {}), f"card.{key} is empty"
    uuid.UUID(card["uuid"])
    assert isinstance(card["summary"], str) and 0 < len(card["summary"]) < 140
    assert card["indicator"] in INDICATORS
    source = card["source"]
    assert isinstance(source["label"], str) and source["label"].strip()
    assert source["url"].startswith(("http://", "https://"))
    assert isinstance(card["detail"], str) and card["detail"].strip()
    if "suggestions" in card:
        assert card["selectionBehavior"] in {"at-most-one", "any"}
        for s in card["suggestions"]:
            assert s["label"].strip()
            uuid.UUID(s["uuid"])
            for a in s["actions"]:
                assert a["type"] in {"create", "update", "delete"}
                assert a["description"].strip()
                if a["type"] == "create":
                    assert isinstance(a["resource"], dict) and a["resource"]["resourceType"]
    for reason in card.get("overrideReasons", []):
        assert reason["code"] and reason["system"] and reason["display"]
