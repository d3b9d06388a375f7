"""The demo EHR page (``/demo``), its synthetic patients, and the model card.

Everything is served by the app itself (no CDN): the page's HTML, JS and CSS live in
``cds_hooks/demo/``; the patients are prefetch payloads made by the synthetic generator.
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse

from cds_hooks.deps import StateDep

__all__ = ["DEMO_DIR", "router"]

DEMO_DIR = Path(__file__).resolve().parents[1] / "demo"
_ASSETS = {
    "demo.js": "text/javascript",
    "demo.css": "text/css",
    "patients.json": "application/json",
}

router = APIRouter(tags=["demo"])


@router.get("/demo", response_class=HTMLResponse, include_in_schema=False)
async def demo_page() -> FileResponse:
    """The demo EHR: pick a synthetic patient, see the cards."""
    return FileResponse(DEMO_DIR / "index.html", media_type="text/html")


@router.get("/demo/{name}", include_in_schema=False)
async def demo_asset(name: str) -> FileResponse:
    media = _ASSETS.get(name)
    if media is None or not (DEMO_DIR / name).is_file():
        raise HTTPException(status_code=404, detail="no such demo file")
    return FileResponse(DEMO_DIR / name, media_type=media)


@router.get("/model-card.md", response_class=PlainTextResponse, tags=["model"])
async def model_card_markdown(state: StateDep) -> PlainTextResponse:
    """The served model's card (Markdown)."""
    return PlainTextResponse(state.model.card_markdown(), media_type="text/markdown")


@router.get("/model-card", response_class=HTMLResponse, tags=["model"])
async def model_card(state: StateDep) -> HTMLResponse:
    """The served model's card, readable in a browser (the card ``source.url``)."""
    text = html.escape(state.model.card_markdown())
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Model card: {html.escape(state.model.name)}</title>"
        "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:52rem;margin:2rem auto;"
        "padding:0 1rem}pre{white-space:pre-wrap;font:inherit}</style></head>"
        f"<body><pre>{text}</pre></body></html>"
    )
    return HTMLResponse(page)
