"""A database file undying cannot use gets one StoreError line saying what to do.

Each file is broken for real: bytes of a page overwritten on disk, a text file, a file and a
directory made immutable with ``chattr +i`` (tests run as root, and root ignores ``chmod``
bits; ``chattr +i`` refuses writes to root too, as a read-only mount would). Each case is
checked through the API (``App.open``) and through the real ``undying`` command.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from cli_helpers import assert_one_error_line, immutable, run_cli

from undying import App, StoreError
from undying.store.sqlfiles import migrations
from undying.store.sqlite import SQLiteStore


def _new_database(path: Path) -> None:
    assert asyncio.run(SQLiteStore(str(path)).migrate())  # the schema, checkpointed into the file


def _open(path: Path) -> None:
    async def main() -> None:
        async with App(str(path), worker=False) as app:
            await app.list_runs()

    asyncio.run(main())


def _ledger_page(path: Path) -> tuple[int, int]:
    """(offset, size) of the page holding the rows of table undying_migrations."""
    with sqlite3.connect(path) as db:
        size = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'undying_migrations'"
        ).fetchone()[0]
    db.close()
    return (root - 1) * size, size


def _overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _assert_refused(path: Path, *fragments: str) -> None:
    with pytest.raises(StoreError) as raised:
        _open(path)
    for fragment in fragments:
        assert fragment in str(raised.value)
    assert "\n" not in str(raised.value)
    assert_one_error_line(run_cli("--db", str(path), "runs"), *fragments)


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("shopping list: milk, eggs\n" * 200)
    _assert_refused(path, "is not an SQLite database", "move this file out of the way")
    assert path.read_text().startswith("shopping list")  # nothing written over it


def test_a_damaged_page_of_the_migration_ledger(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    _new_database(path)
    offset, size = _ledger_page(path)
    _overwrite(path, offset, b"\xab" * size)
    _assert_refused(path, "is damaged", "restore it from a backup")


def test_a_damaged_ledger_row_is_not_taken_for_a_newer_schema(tmp_path: Path) -> None:
    """Damage that SQLite's own integrity check cannot see: the last row's rowid (its
    version) overwritten with 99. It used to read as "newer schema: upgrade undying"."""
    path = tmp_path / "damaged-row.db"
    _new_database(path)
    offset, _ = _ledger_page(path)
    assert offset > 0  # not page 1, whose page header comes after the 100-byte file header
    with open(path, "rb") as f:
        f.seek(offset)
        header = f.read(12)
    cells = int.from_bytes(header[3:5], "big")
    with open(path, "rb") as f:
        f.seek(offset + 8 + 2 * (cells - 1))
        last_cell = int.from_bytes(f.read(2), "big")
    _overwrite(path, offset + last_cell + 1, bytes([99]))  # after the 1-byte payload size
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert max(v for (v,) in db.execute("SELECT version FROM undying_migrations")) == 99
    db.close()
    _assert_refused(path, "is damaged", "undying_migrations", "99")


def test_a_really_newer_schema_says_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    _new_database(path)
    future = max(version for version, _, _ in migrations("sqlite")) + 1
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO undying_migrations VALUES (?, ?, 0)", (future, f"{future:03d}_future.sql")
        )
    db.close()
    _assert_refused(path, f"has schema version {future}, newer than this undying", "upgrade")


def test_a_read_only_database_file(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    _new_database(path)
    with immutable(path):
        _assert_refused(path, "is read-only", "needs write access to the database file")
        assert_one_error_line(
            run_cli("--db", str(path), "send", "some-run", "ping", "{}"), "is read-only"
        )


def test_a_read_only_directory(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "agents.db"
    _new_database(path)
    with immutable(folder):
        _assert_refused(path, "is read-only", "directory")
        _assert_refused(folder / "new.db", "is read-only", "directory")


def test_a_missing_directory(tmp_path: Path) -> None:
    _assert_refused(tmp_path / "nowhere" / "agents.db", "does not exist", "create it first")
