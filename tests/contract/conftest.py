"""Fixtures for the contract suite: the same tests against every store.

Memory: each test gets a named in-memory database of its own (``memory://contract-<uuid>``),
forgotten at the end of the test; stores of that name share it, as processes share a file.

PostgreSQL: the session creates its own database on the server at ``$UNDYING_TEST_PG_URL``
(default ``postgresql://postgres@127.0.0.1:5432/postgres``), migrates it once, empties every
table before each test and drops the database at the end. An unreachable server fails the
PostgreSQL tests with a message; it never skips them, so a green run means every store passed.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from undying.store.base import Store
from undying.store.memory import MemoryStore, drop_database
from undying.store.postgres import PostgresStore
from undying.store.sqlfiles import migrations
from undying.store.sqlite import SQLiteStore

PG_SERVER = os.environ.get("UNDYING_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

MakeStore = Callable[[], Store]


class PostgresServer:
    """The test server, and the databases this session created on it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.created: list[str] = []
        try:
            self.admin = psycopg.connect(url, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as exc:
            pytest.fail(
                f"the contract suite needs PostgreSQL at {url} (set UNDYING_TEST_PG_URL to "
                f"another server); connecting failed: {exc}",
                pytrace=False,
            )

    def _execute(self, query: sql.Composable) -> None:
        """Run an admin statement, reconnecting once if the server restarted meanwhile
        (another test in the session may restart it on purpose)."""
        try:
            self.admin.execute(query)
        except psycopg.OperationalError:
            self.admin.close()
            self.admin = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            self.admin.execute(query)

    def create_database(self) -> str:
        name = f"undying_test_{uuid.uuid4().hex[:12]}"
        self._execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.append(name)
        if "://" not in self.url:  # a key=value conninfo string
            return make_conninfo(self.url, dbname=name)
        return urlsplit(self.url)._replace(path=f"/{name}").geturl()

    def drop_all(self) -> None:
        for name in self.created:
            self._execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        self.admin.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer(PG_SERVER)
    yield server
    server.drop_all()


@pytest.fixture(scope="session")
def pg_url(pg_server: PostgresServer) -> Iterator[str]:
    """The session's database, migrated once."""
    url = pg_server.create_database()
    applied = asyncio.run(PostgresStore(url).migrate())
    assert applied == [name for _, name, _ in migrations("postgres")]
    yield url


class Cleaner:
    """Empties the session's tables before each test (DELETE: far cheaper than TRUNCATE on
    tables this small). The tables are read from the schema, so new migrations are covered."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        rows = self.conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "AND tablename <> 'undying_migrations'"
        ).fetchall()
        self.tables = [str(row[0]) for row in rows]

    def clean(self) -> None:
        for table in self.tables:
            self.conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
        self.conn.execute("DROP TABLE IF EXISTS app_rows")  # made by a test's transaction


@pytest.fixture(scope="session")
def pg_cleaner(pg_url: str) -> Iterator[Cleaner]:
    cleaner = Cleaner(pg_url)
    yield cleaner
    cleaner.conn.close()


@pytest.fixture(params=["sqlite", "postgres", "memory"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> MakeStore:
    """A factory of (unopened) stores on one database, empty at the start of the test.
    Several stores stand for several worker processes."""
    if backend == "sqlite":
        path = str(tmp_path / "contract.db")
        return lambda: SQLiteStore(path)
    if backend == "memory":
        url = _memory_url(request, "contract")
        return lambda: MemoryStore(url)
    url = request.getfixturevalue("pg_url")
    cleaner: Cleaner = request.getfixturevalue("pg_cleaner")
    cleaner.clean()
    return lambda: PostgresStore(url)


@pytest.fixture
def store(make_store: MakeStore) -> Store:
    """An unopened store; tests open it inside their own event loop."""
    return make_store()


@pytest.fixture
def fresh_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of a brand-new, empty database (for migration tests)."""
    if backend == "sqlite":
        return str(tmp_path / "fresh.db")
    if backend == "memory":
        return _memory_url(request, "fresh")
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.create_database()


def _memory_url(request: pytest.FixtureRequest, prefix: str) -> str:
    """A named memory database no other test uses, forgotten when the test ends."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    request.addfinalizer(lambda: drop_database(name))
    return f"memory://{name}"
