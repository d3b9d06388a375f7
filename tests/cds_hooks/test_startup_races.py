"""``serve --workers N`` on a fresh data folder: N processes create the pseudonym key,
migrate the database and register the model at the same moment."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import inspect

import cds_hooks.privacy as privacy
from cds_hooks.db import Database, Repository
from cds_hooks.privacy import Pseudonymiser, load_or_create_key

T = TypeVar("T")
MODEL = dict(name="m", version="1", spec_version="s", checksum="c" * 64, path="/m")


def _all_at_once(n: int, fn: Callable[[int], T]) -> list[T]:
    """Run ``fn(i)`` in ``n`` threads released together; re-raise the first error."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise errors[0]
    return results


def test_key_created_by_another_worker_meanwhile_is_adopted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exact interleaving: worker A finds no key file and draws its key; before A
    writes it, worker B creates the file. A must use B's key, not crash or overwrite."""
    real_token_bytes = privacy.secrets.token_bytes
    others: list[bytes] = []

    def token_bytes_with_a_rival(n: int) -> bytes:
        if not others:  # only A's call: let B run to completion right now
            others.append(b"")
            others[0] = load_or_create_key(tmp_path)
        return real_token_bytes(n)

    monkeypatch.setattr(privacy.secrets, "token_bytes", token_bytes_with_a_rival)
    key_a = load_or_create_key(tmp_path)
    assert key_a == others[0]
    assert bytes.fromhex((tmp_path / "pseudonym.key").read_text()) == key_a
    assert [p.name for p in tmp_path.iterdir()] == ["pseudonym.key"]  # no temp files left


def test_concurrent_key_creation_gives_every_worker_the_same_key(tmp_path: Path) -> None:
    for attempt in range(10):
        folder = tmp_path / f"fresh-{attempt}"
        keys = _all_at_once(8, lambda _i, f=folder: load_or_create_key(f))
        assert len(set(keys)) == 1
        assert Pseudonymiser(keys[0])("Patient/1") == Pseudonymiser(keys[-1])("Patient/1")
        assert (folder / "pseudonym.key").stat().st_mode & 0o777 == 0o600


def test_corrupt_key_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "pseudonym.key").write_text("not hex")
    with pytest.raises(ValueError, match="does not hold a hex key"):
        load_or_create_key(tmp_path)


def test_concurrent_migrations_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh' / 'cds.db'}"
    databases = [Database(url) for _ in range(6)]
    try:
        _all_at_once(6, lambda i: databases[i].migrate())
        assert "predictions" in inspect(databases[0].engine).get_table_names()
    finally:
        for db in databases:
            db.dispose()


def test_concurrent_register_model_returns_one_row(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cds.db'}"
    Repository.open(url).db.dispose()
    repos = [Repository(Database(url)) for _ in range(8)]
    try:
        ids = _all_at_once(8, lambda i: repos[i].register_model(**MODEL))
        assert len(set(ids)) == 1
        assert len(repos[0].models()) == 1
    finally:
        for r in repos:
            r.db.dispose()


def test_register_model_losing_the_insert_race_reads_the_winner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker A looks up the model and finds nothing; worker B inserts it before A does.
    A's insert then violates the unique constraint, and A must return B's row id."""
    url = f"sqlite:///{tmp_path / 'cds.db'}"
    repo_a = Repository.open(url)
    repo_b = Repository(Database(url))
    real_lookup = Repository._model_id
    winner: list[int] = []

    def lookup_then_rival_inserts(s: Any, name: str, version: str, checksum: str) -> int | None:
        found = real_lookup(s, name, version, checksum)
        if not winner:
            monkeypatch.setattr(Repository, "_model_id", staticmethod(real_lookup))
            winner.append(repo_b.register_model(**MODEL))
        return found

    monkeypatch.setattr(Repository, "_model_id", staticmethod(lookup_then_rival_inserts))
    try:
        assert repo_a.register_model(**MODEL) == winner[0]
        assert len(repo_a.models()) == 1
    finally:
        repo_a.db.dispose()
        repo_b.db.dispose()
