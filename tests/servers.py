"""Real servers the integration tests start on 127.0.0.1 (free port, temp folder).

Each starter fails under CI=true when its server is not installed and skips elsewhere
(``tests.conftest.require_executable``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_port, require_executable

__all__ = ["PostgresServer", "start_postgres"]

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
