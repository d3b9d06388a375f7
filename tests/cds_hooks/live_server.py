"""The app served by uvicorn on a free loopback port, in a background thread."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from cds_hooks.config import Settings
from cds_hooks.main import create_app
from tests.conftest import free_port


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """Yields the base URL while uvicorn serves ``create_app(settings)``."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if not thread.is_alive():
                    raise RuntimeError("uvicorn exited during startup") from None
                time.sleep(0.1)
        else:
            raise RuntimeError("the app did not become ready")
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)
