"""Tiny real HTTP endpoints on loopback for the service to call (FHIR Binary, slow servers)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Seen:
    """What one server was asked: (path, Authorization header) per request."""

    requests: list[tuple[str, str | None]] = field(default_factory=list)


@contextmanager
def static_server(routes: dict[str, tuple[bytes, str]]) -> Iterator[tuple[str, Seen]]:
    """Serves ``path -> (body, content type)`` on 127.0.0.1; 404 for anything else.

    Yields the origin (``http://127.0.0.1:PORT``) and the record of requests.
    """
    seen = Seen()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.requests.append((self.path, self.headers.get("Authorization")))
            found = routes.get(self.path)
            if found is None:
                self.send_error(404)
                return
            body, ctype = found
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:  # keep test output clean
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def silent_server() -> Iterator[str]:
    """A port that accepts TCP connections (kernel backlog) but never answers: every
    request to it hangs until the client's timeout. Yields its origin."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()
