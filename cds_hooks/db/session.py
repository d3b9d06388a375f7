"""Engine, sessions and migrations.

``upgrade_to_head`` applies the packaged Alembic migrations programmatically (no
``alembic.ini`` needed), so a fresh SQLite file or an empty PostgreSQL database is
brought to the current schema when the service starts. ``serve --workers N`` starts N
processes that all migrate at once, so migrations are serialised: a PostgreSQL advisory
lock, or an ``flock`` on a file beside a SQLite database. The workers that wait then
find the schema at head and do nothing.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["MIGRATIONS_DIR", "Database", "alembic_config", "upgrade_to_head"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant works; it only has to be the same in every process of this service
# ("moeHealt" in ASCII, a positive 64-bit integer as pg_advisory_xact_lock wants).
_PG_MIGRATION_LOCK = 0x6D6F_6548_6561_6C74


def _sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (``None`` for in-memory databases)."""
    path = url.split("///", 1)[-1] if url.startswith("sqlite") else ""
    return Path(path) if path and path != ":memory:" else None


def _make_engine(url: str) -> Engine:
    kwargs: dict[str, Any] = {"future": True, "pool_pre_ping": True}
    if url.startswith("sqlite"):
        sqlite_file = _sqlite_file(url)
        if sqlite_file is not None:
            sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    return engine


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at the packaged migrations and ``url``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if needed), held for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def upgrade_to_head(engine: Engine) -> None:
    """Apply every pending migration on ``engine``'s database, one process at a time."""
    url = engine.url.render_as_string(hide_password=False)
    cfg = alembic_config(url)
    sqlite_file = _sqlite_file(url)
    lock: AbstractContextManager[None] = (
        _file_lock(sqlite_file.with_name(sqlite_file.name + ".migrate.lock"))
        if sqlite_file is not None
        else nullcontext()
    )
    with lock, engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Held until this transaction ends; PostgreSQL DDL is transactional, so the
            # next worker sees either no schema or the whole new one.
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Database:
    """One engine + session factory for the process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> None:
        """Bring the schema to the newest migration."""
        upgrade_to_head(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with self._sessions() as s, s.begin():
            yield s

    def dispose(self) -> None:
        self.engine.dispose()
