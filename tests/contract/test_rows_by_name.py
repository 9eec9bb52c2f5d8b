"""Rows become records by column name, on both SQL dialects: a query whose columns are
reordered still fills every field right, and a column no field takes is an error naming it,
never a value shifted into the next field."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from undying.errors import StoreError
from undying.store.base import NewRun, RunRecord
from undying.store.pg_session import records
from undying.store.postgres import PostgresStore
from undying.store.rows import record_maker
from undying.store.sqlite import SQLiteStore

NOW = 1_700_000_000.0
RUN = NewRun("r1", "wf", b"input", parent_id=None, queue="q", priority=7, deadline=NOW + 9)
FIELDS = [f.name for f in dataclasses.fields(RunRecord)]


def _stored(store: Any) -> RunRecord:
    async def body() -> RunRecord:
        await store.open("w1")
        try:
            _, record = await store.create_run(RUN, owner="w1", lease_expires=NOW + 60, now=NOW)
            assert isinstance(record, RunRecord)
            return record
        finally:
            await store.close()

    return asyncio.run(body())


def _records(cur: sqlite3.Cursor) -> list[RunRecord]:
    """As the SQLite store reads rows: names from the cursor, SQLite's 0/1 made bools."""
    make = record_maker(RunRecord, tuple(d[0] for d in cur.description), True)
    return [make(row) for row in cur]


def test_sqlite_rows_map_by_name_in_any_order(tmp_path: Path) -> None:
    path = str(tmp_path / "rows.db")
    stored = _stored(SQLiteStore(path))
    db = sqlite3.connect(path)
    try:
        reordered = ", ".join(reversed(FIELDS))
        [record] = _records(db.execute(f"SELECT {reordered} FROM runs"))
        assert record == stored
        assert record.cancel_requested is False  # SQLite's 0, as the bool the field is
        with pytest.raises(StoreError, match=r"unknown: \['surplus'\]"):
            _records(db.execute(f"SELECT {', '.join(FIELDS)}, 1 AS surplus FROM runs"))
        with pytest.raises(StoreError, match=r"missing: \['epoch', 'input'\]"):
            _records(db.execute("SELECT run_id, workflow, status FROM runs"))
    finally:
        db.close()


def test_postgres_rows_map_by_name_in_any_order(pg_url: str, pg_cleaner: Any) -> None:
    pg_cleaner.clean()
    stored = _stored(PostgresStore(pg_url))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        reordered = ", ".join(reversed(FIELDS))
        with conn.cursor(row_factory=records(RunRecord)) as cur:
            record = cur.execute(f"SELECT {reordered} FROM runs").fetchone()
            assert record == stored
            with pytest.raises(StoreError, match=r"unknown: \['surplus'\]"):
                cur.execute(f"SELECT {', '.join(FIELDS)}, 1 AS surplus FROM runs")


def test_in_order_columns_are_passed_positionally() -> None:
    """The fast path must build the same record as the keyword path."""
    row = ("r", "wf", "running", b"in", 3)
    in_order = record_maker(RunRecord, tuple(FIELDS[:5]))(row)
    shuffled = record_maker(RunRecord, tuple(reversed(FIELDS[:5])))(tuple(reversed(row)))
    assert in_order == shuffled == RunRecord("r", "wf", "running", b"in", 3)
