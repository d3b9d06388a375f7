"""Real servers the integration tests start on 127.0.0.1 (free port, temp folder).

Each starter fails under CI=true when its server is not installed and skips elsewhere
(``tests.conftest.require_executable``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import IN_CI, free_port, require_executable

__all__ = [
    "PostgresServer",
    "orthanc_server",
    "sekmet_server",
    "start_orthanc",
    "start_postgres",
    "start_sekmet",
]

_PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


@dataclass
class PostgresServer:
    """A throw-away PostgreSQL cluster; ``url`` is a SQLAlchemy (psycopg 3) URL."""

    data_dir: Path
    port: int
    pg_ctl: str
    run_as: list[str]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        subprocess.run(
            [*self.run_as, self.pg_ctl, "-D", str(self.data_dir), "-m", "immediate", "stop"],
            check=False, capture_output=True, timeout=30,
        )


def start_postgres(tmp_path: Path) -> PostgresServer:
    """initdb + pg_ctl start in ``tmp_path`` (as user ``postgres`` when running as root)."""
    candidates = [str(d / "initdb") for d in _PG_BIN_DIRS]
    initdb = require_executable("initdb", *candidates)
    bindir = Path(initdb).parent
    pg_ctl = str(bindir / "pg_ctl")
    root = tmp_path / "pg"
    data = root / "data"
    root.mkdir(parents=True, exist_ok=True)
    run_as: list[str] = []
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None:
            raise RuntimeError("running as root and 'runuser' is missing: cannot start postgres")
        run_as = [runuser, "-u", "postgres", "--"]
        shutil.chown(root, user="postgres")
        # every parent must be traversable by the postgres user
        for parent in root.parents:
            if parent == Path("/"):
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)
    subprocess.run(
        [*run_as, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
         "--no-sync"],
        check=True, capture_output=True, timeout=120,
    )
    port = free_port()
    opts = f"-p {port} -h 127.0.0.1 -k {root} -F"
    subprocess.run(
        [*run_as, pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w",
         "-t", "60", "start"],
        check=True, capture_output=True, timeout=90,
    )
    server = PostgresServer(data_dir=data, port=port, pg_ctl=pg_ctl, run_as=run_as)
    deadline = time.monotonic() + 30
    import socket

    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"postgres did not open port {port}")


# --- sekmet-fhir: an R4 server with $export and SMART Backend Services -------------------

SEKMET_READY_TIMEOUT_S = 90.0


def _sekmet_settings(
    root: Path, port: int, tokens: list[str], smart_clients: list[dict[str, object]]
) -> Path:
    import json

    types = (["bearer"] if tokens else []) + (["smart"] if smart_clients else [])
    settings = {
        "base_url": f"http://127.0.0.1:{port}/fhir",
        "host": "127.0.0.1",
        "port": port,
        "data_dir": str(root / "data"),
        "validation": {"inbound": "off"},
        "simulator": {"enabled": False},
        "server_auth": {
            "types": types or ["none"],
            "tokens": tokens,
            "smart_clients": smart_clients,
        },
    }
    path = root / "settings.yaml"
    path.write_text(json.dumps(settings))  # JSON is valid YAML
    return path


@contextlib.contextmanager
def start_sekmet(
    tmp_path: Path,
    *,
    tokens: list[str] | None = None,
    smart_clients: list[dict[str, object]] | None = None,
) -> Iterator[str]:
    """Run ``sekmet serve`` on a free loopback port with its data in ``tmp_path``.

    Yields the FHIR base URL (``http://127.0.0.1:<port>/fhir``). ``tokens`` turns on static
    bearer auth; ``smart_clients`` (sekmet ``SmartClient`` dicts: ``client_id``, ``jwks``,
    ``scopes``) turns on SMART Backend Services. The server is stopped on exit.
    """
    import httpx

    exe = require_executable("sekmet")
    root = tmp_path / "sekmet"
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = _sekmet_settings(root, port, tokens or [], smart_clients or [])
    log = (root / "serve.log").open("wb")
    proc = subprocess.Popen(
        [exe, "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
        cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "SEKMET_CONFIG": str(config)},
    )
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        deadline = time.monotonic() + SEKMET_READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"sekmet exited with {proc.returncode}: "
                    f"{(root / 'serve.log').read_text(errors='replace')[-2000:]}"
                )
            try:
                if httpx.get(f"{base}/metadata", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"sekmet did not answer on {base} within the timeout")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


@pytest.fixture
def sekmet_server(tmp_path: Path) -> Iterator[str]:
    """A fresh, empty sekmet-fhir server (no auth); yields its FHIR base URL."""
    with start_sekmet(tmp_path) as base:
        yield base


# --- Orthanc with its DICOMweb plugin ---------------------------------------------------

ORTHANC_READY_TIMEOUT_S = 60.0
_DICOMWEB_PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc"))


def _dicomweb_plugin() -> str:
    for folder in _DICOMWEB_PLUGIN_DIRS:
        for path in sorted(folder.glob("libOrthancDicomWeb.so*")):
            if path.is_file():
                return str(path)
    msg = "the Orthanc DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)"
    if IN_CI:
        pytest.fail(msg)
    pytest.skip(msg)


@contextlib.contextmanager
def start_orthanc(tmp_path: Path) -> Iterator[str]:
    """Run Orthanc + DICOMweb on a free loopback port with its storage in ``tmp_path``.

    Yields the server root (``http://127.0.0.1:<port>``); DICOMweb is at ``/dicom-web/``.
    No authentication, no remote access, the DICOM (DIMSE) server off. Stopped on exit.
    """
    import json

    import httpx

    exe = require_executable("Orthanc", "/usr/sbin/Orthanc")
    plugin = _dicomweb_plugin()
    root = tmp_path / "orthanc"
    (root / "db").mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "Name": "moe-health-test",
        "StorageDirectory": str(root / "db"),
        "IndexDirectory": str(root / "db"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "DicomPort": free_port(),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
    }
    config_path = root / "orthanc.json"
    config_path.write_text(json.dumps(config))
    log = (root / "orthanc.log").open("wb")
    proc = subprocess.Popen(
        [exe, str(config_path)], cwd=root, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ORTHANC_READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited with {proc.returncode}: "
                    f"{(root / 'orthanc.log').read_text(errors='replace')[-2000:]}"
                )
            try:
                if httpx.get(f"{base}/system", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not answer on {base} within the timeout")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


@pytest.fixture
def orthanc_server(tmp_path: Path) -> Iterator[str]:
    """A fresh, empty Orthanc with DICOMweb; yields its root URL."""
    with start_orthanc(tmp_path) as base:
        yield base
