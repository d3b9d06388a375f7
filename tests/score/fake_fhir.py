"""A tiny FHIR server on 127.0.0.1 for ``--fhir`` tests that need to control the server.

It serves a Bulk Data ``$export`` of an NDJSON folder (kick-off -> status -> manifest ->
files), accepts transaction Bundles (PUT entries are stored by id), can refuse them on
demand, and records every request with its ``Authorization`` header. The real server
test (sekmet-fhir) is ``test_fhir_writeback.py``; this one can fail write-backs and
inspect headers, which a real server cannot be made to do.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

__all__ = ["FakeFhir", "fake_fhir_server"]


@dataclass
class FakeFhir:
    """What the server holds and saw; tests change ``reject_status`` between runs."""

    export_dir: Path
    base: str = ""
    reject_status: int | None = None  # answer every transaction with this status
    reject_ids: set[str] = field(default_factory=set)  # ...or refuse Bundles holding these
    stored: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    transactions: list[int] = field(default_factory=list)  # entries per Bundle received
    kickoffs: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def files(self) -> list[Path]:
        return sorted(self.export_dir.glob("*.ndjson"))


def _handler(state: FakeFhir) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def _send(
            self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _record(self) -> str:
            path = urlsplit(self.path).path
            with state.lock:
                state.requests.append((self.command, path, self.headers.get("Authorization")))
            return path

        def do_GET(self) -> None:
            path = self._record()
            if path == "/fhir/$export":
                with state.lock:
                    state.kickoffs += 1
                self._send(202, headers={"Content-Location": f"{state.base}/status/1"})
            elif path == "/fhir/status/1":
                output = [
                    {"type": f.name.split(".")[0], "url": f"{state.base}/files/{f.name}"}
                    for f in state.files()
                ]
                manifest = {
                    "transactionTime": "2024-01-01T00:00:00Z",
                    "request": f"{state.base}/$export",
                    "requiresAccessToken": True,
                    "output": output,
                    "error": [],
                }
                self._send(200, orjson.dumps(manifest), {"Content-Type": "application/json"})
            elif path.startswith("/fhir/files/"):
                data = (state.export_dir / path.rsplit("/", 1)[-1]).read_bytes()
                self._send(200, data, {"Content-Type": "application/fhir+ndjson"})
            else:
                self._send(404)

        def do_DELETE(self) -> None:
            self._record()
            self._send(202)

        def do_POST(self) -> None:
            path = self._record()
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if path not in ("/fhir", "/fhir/"):
                self._send(404)
                return
            bundle = orjson.loads(body)
            resources = [e["resource"] for e in bundle.get("entry", [])]
            with state.lock:
                state.transactions.append(len(resources))
                refuse = state.reject_status or (
                    422 if any(r["id"] in state.reject_ids for r in resources) else None
                )
                if not refuse:
                    state.stored.update({r["id"]: r for r in resources})
            if refuse:
                outcome = {
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "processing", "diagnostics": "no"}],
                }
                self._send(refuse, orjson.dumps(outcome), {"Content-Type": "application/fhir+json"})
                return
            reply = {
                "resourceType": "Bundle",
                "type": "transaction-response",
                "entry": [{"response": {"status": "200 OK"}} for _ in resources],
            }
            self._send(200, orjson.dumps(reply), {"Content-Type": "application/fhir+json"})

    return Handler


@contextlib.contextmanager
def fake_fhir_server(export_dir: Path) -> Iterator[FakeFhir]:
    """Serve ``export_dir`` on a free port; yields the state (``.base`` is the FHIR base)."""
    state = FakeFhir(export_dir)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base = f"http://127.0.0.1:{server.server_address[1]}/fhir"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
