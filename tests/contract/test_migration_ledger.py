"""The migration runner's refusals, on both SQL dialects: a damaged ledger and a newer schema.

Each database is migrated for real, then its ledger (``undying_migrations``) is changed with
the database's own client, the way damage or a newer undying would leave it; opening and
migrating must then refuse with a ``StoreError`` that says what is wrong, and change nothing.
(The memory store has no schema and no ledger.)
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import psycopg
import pytest

from undying.errors import StoreError
from undying.store import store_from_url
from undying.store.sqlfiles import migrations

SQL_BACKENDS = pytest.mark.parametrize("backend", ["sqlite", "postgres"])


def _sql(backend: str, url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement on the database directly (``?`` placeholders, as SQLite's)."""
    if backend == "sqlite":
        db = sqlite3.connect(url, isolation_level=None)
        try:
            return db.execute(statement, params).fetchall()
        finally:
            db.close()
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement.replace("?", "%s"), params)
        return list(cur.fetchall()) if cur.description else []


def _ledger(backend: str, url: str) -> list[tuple[Any, ...]]:
    return _sql(backend, url, "SELECT version, name FROM undying_migrations ORDER BY version")


def _newest(backend: str) -> int:
    """The highest migration version shipped (versions may leave gaps while migrations from
    parallel branches land: the runner only requires the applied ones to be known)."""
    return max(version for version, _, _ in migrations(backend))


def _migrated(backend: str, url: str) -> list[str]:
    names = [name for _, name, _ in migrations(backend)]
    assert asyncio.run(store_from_url(url).migrate()) == names
    assert asyncio.run(store_from_url(url).migrate()) == []  # up to date: nothing again
    return names


def _refused(url: str, *fragments: str) -> None:
    """Both ways into the database refuse it: ``open`` and ``undying migrate``."""

    async def open_it() -> None:
        store = store_from_url(url)
        await store.open("w1")
        await store.close()

    for attempt in (open_it, store_from_url(url).migrate):
        with pytest.raises(StoreError) as raised:
            asyncio.run(attempt())
        message = str(raised.value)
        for fragment in fragments:
            assert fragment in message
        assert "\n" not in message


@SQL_BACKENDS
def test_a_ledger_row_undying_never_writes_is_damage(backend: str, fresh_url: str) -> None:
    _migrated(backend, fresh_url)
    _sql(backend, fresh_url, "UPDATE undying_migrations SET name = ? WHERE version = 2", "7_x.sql")
    before = _ledger(backend, fresh_url)
    _refused(fresh_url, "is damaged", "undying_migrations", "(2, '7_x.sql')", "backup")
    assert _ledger(backend, fresh_url) == before


@SQL_BACKENDS
def test_a_gap_in_the_ledger_is_damage_not_a_migration_to_apply(
    backend: str, fresh_url: str
) -> None:
    names = _migrated(backend, fresh_url)
    assert len(names) >= 3
    _sql(backend, fresh_url, "DELETE FROM undying_migrations WHERE version = 2")
    before = _ledger(backend, fresh_url)
    _refused(
        fresh_url, "is damaged", "lacks migration(s) [2]", f"below version {_newest(backend)}"
    )
    assert _ledger(backend, fresh_url) == before  # 002 was not applied a second time


@SQL_BACKENDS
def test_a_newer_schema_is_refused_with_upgrade_undying(backend: str, fresh_url: str) -> None:
    _migrated(backend, fresh_url)
    future = _newest(backend) + 1
    _sql(
        backend,
        fresh_url,
        "INSERT INTO undying_migrations (version, name, applied_at) VALUES (?, ?, 0)",
        future,
        f"{future:03d}_from_the_future.sql",
    )
    before = _ledger(backend, fresh_url)
    _refused(
        fresh_url,
        f"has schema version {future}, newer than this undying knows ({_newest(backend)})",
        "upgrade undying",
    )
    assert _ledger(backend, fresh_url) == before


@SQL_BACKENDS
def test_a_database_without_a_ledger_gets_the_whole_schema(backend: str, fresh_url: str) -> None:
    names = _migrated(backend, fresh_url)
    assert [name for _, name in _ledger(backend, fresh_url)] == names
    assert [version for version, _ in _ledger(backend, fresh_url)] == [
        version for version, _, _ in migrations(backend)
    ]
