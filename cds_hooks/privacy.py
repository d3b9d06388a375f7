"""Patient pseudonyms: keyed HMAC-SHA256, so logs and the audit table never hold an id.

The key comes from settings, or is created once (random, file mode 0600) in the data
folder so pseudonyms stay stable across restarts without being reversible elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path

__all__ = ["Pseudonymiser", "load_or_create_key"]

_KEY_FILE = "pseudonym.key"
_MIN_KEY_BYTES = 16


def _read_key(path: Path) -> bytes:
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError as exc:
        raise ValueError(f"pseudonym key file {path} does not hold a hex key") from exc
    if len(key) < _MIN_KEY_BYTES:
        raise ValueError(f"pseudonym key file {path} holds {len(key)} bytes, need >= 16")
    return key


def load_or_create_key(data_dir: Path) -> bytes:
    """The HMAC key stored in ``data_dir``, created on first use.

    Safe when several workers start at once on a fresh data folder: the key is written
    in full to a private temporary file and then hard-linked to its final name, which
    fails if another process got there first. A loser never sees a half-written file
    (as it could with ``O_EXCL`` on the final name) and adopts the winner's key, so every
    worker pseudonymises with the same key.
    """
    path = data_dir / _KEY_FILE
    if path.is_file():
        return _read_key(path)
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd, tmp = tempfile.mkstemp(prefix=f".{_KEY_FILE}.", dir=data_dir)  # mode 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(key.hex())
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)
    except FileExistsError:
        return _read_key(path)  # another worker created it first: use that key
    finally:
        os.unlink(tmp)
    return key


class Pseudonymiser:
    """``pseudonym("Patient/123")`` -> 32 hex characters, stable for one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < _MIN_KEY_BYTES:
            raise ValueError(f"pseudonym key must be at least 16 bytes, got {len(key)}")
        self._key = key

    def __call__(self, identifier: str) -> str:
        return hmac.new(self._key, identifier.encode(), hashlib.sha256).hexdigest()[:32]
