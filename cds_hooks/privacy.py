"""Patient pseudonyms: keyed HMAC-SHA256, so logs and the audit table never hold an id.

The key comes from settings, or is created once (random, file mode 0600) in the data
folder so pseudonyms stay stable across restarts without being reversible elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

__all__ = ["Pseudonymiser", "load_or_create_key"]

_KEY_FILE = "pseudonym.key"


def load_or_create_key(data_dir: Path) -> bytes:
    """The HMAC key stored in ``data_dir``, created on first use."""
    path = data_dir / _KEY_FILE
    if path.is_file():
        return bytes.fromhex(path.read_text().strip())
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex())
    return key


class Pseudonymiser:
    """``pseudonym("Patient/123")`` -> 32 hex characters, stable for one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError(f"pseudonym key must be at least 16 bytes, got {len(key)}")
        self._key = key

    def __call__(self, identifier: str) -> str:
        return hmac.new(self._key, identifier.encode(), hashlib.sha256).hexdigest()[:32]
