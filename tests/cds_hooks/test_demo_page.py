"""The /demo page in headless Chromium: pick a synthetic patient, see cards and gate chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cds_hooks.browser import Chromium
from tests.cds_hooks.conftest import make_settings
from tests.cds_hooks.live_server import serve


@pytest.mark.integration
def test_demo_page_renders_cards_for_a_selected_patient(
    tmp_path: Path, demo_patients: list[dict[str, Any]]
) -> None:
    browser = Chromium(tmp_path)
    try:
        with serve(make_settings(tmp_path)) as base:
            browser.navigate(f"{base}/demo")
            browser.wait_for("document.body.dataset.ready === 'true'")
            options = browser.evaluate(
                "[...document.querySelectorAll('#patient-select option')].map(o => o.value)"
            )
            assert len([o for o in options if o]) == len(demo_patients) == 7
            target = next(p for p in demo_patients if p["pattern"] == "E+T+I")["id"]
            browser.evaluate(
                f"(() => {{ const s = document.getElementById('patient-select');"
                f" s.value = {target!r}; s.dispatchEvent(new Event('change')); }})()"
            )
            n_cards = browser.wait_for("document.querySelectorAll('#cards .card').length")
            assert n_cards == 3
            summaries = browser.evaluate(
                "[...document.querySelectorAll('#cards .card .summary')].map(e => e.textContent)"
            )
            assert all("%" in s for s in summaries)
            bars = browser.wait_for("document.querySelectorAll('#gate-svg rect').length")
            assert bars >= 1
            status = browser.evaluate("document.getElementById('status').textContent")
            assert "card" in status
    finally:
        browser.close()
