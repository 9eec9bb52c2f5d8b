"""One migration runner for every SQL store: what is applied, in which order, and what is refused.

Each store supplies a ``Ledger``: how to hold the lock that keeps two processes from migrating
at once, how to read the rows of ``undying_migrations`` (creating the table if it is missing),
and how to apply one migration file in a transaction. The runner decides the rest, the same
way for every dialect:

* the ledger is checked before anything is applied: every row undying writes is
  (N, "NNN_name.sql") and migrations are applied in order, so a row whose version disagrees
  with its file name, or a gap below the highest version, is damage, not a newer schema
  (a damaged SQLite page once read back as version 99);
* a database whose schema is newer than this undying knows is refused ("upgrade undying"),
  never migrated down or written to;
* the migrations not yet applied are applied in order, and the names of those this call
  applied are returned (``undying migrate`` prints them).

How a dialect makes that safe against a concurrent migrator differs, and is the ledger's to
say: SQLite applies each migration in its own ``BEGIN IMMEDIATE`` and re-checks, inside it,
that another process did not apply it meanwhile (a SQLite file has one writer at a time, and
a long migration must not hold it throughout); PostgreSQL applies them all in one transaction
under an advisory lock (its DDL is transactional, and workers starting together against an
empty database wait for one another instead of racing). The memory store has no schema and
no ledger: its ``migrate`` applies nothing.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from ..errors import StoreError

#: the ledger's table, as messages name it
LEDGER = "undying_migrations"
_MIGRATION_FILE = re.compile(r"^(\d+)_\w+\.sql$")

#: (version, file name, SQL) of one migration file, as ``sqlfiles.migrations`` lists them
Migration = tuple[int, str, str]


class Ledger(abc.ABC):
    """A dialect's part of migrating one database (see the module docstring)."""

    #: how messages name the database (a quoted path, a URL without its password)
    where: str
    #: what to tell a user whose ledger is damaged
    remedy: str

    @abc.abstractmethod
    def locked(self) -> AbstractAsyncContextManager[None]:
        """Held while the ledger is read and every pending migration applied."""

    @abc.abstractmethod
    async def applied(self) -> Iterable[tuple[Any, Any]]:
        """The ledger's (version, name) rows, the table created first if it is missing."""

    @abc.abstractmethod
    async def apply(self, version: int, name: str, sql: str) -> bool:
        """Apply one migration and record it in the ledger, in one transaction. False if it
        turned out to be applied already (by another process, meanwhile)."""


async def migrate(ledger: Ledger, known: Sequence[Migration]) -> list[str]:
    """Bring the database up to date; return the names of the migrations applied here."""
    done: list[str] = []
    async with ledger.locked():
        applied = check_ledger(ledger, await ledger.applied(), {v for v, _, _ in known})
        for version, name, sql in known:
            if version not in applied and await ledger.apply(version, name, sql):
                done.append(name)
    return done


def check_ledger(ledger: Ledger, rows: Iterable[tuple[Any, Any]], known: set[int]) -> set[int]:
    """The applied migration versions, once the ledger's rows are checked (module docstring)."""
    applied: set[int] = set()
    for version, name in rows:
        match = _MIGRATION_FILE.match(name) if isinstance(name, str) else None
        if not isinstance(version, int) or match is None or int(match.group(1)) != version:
            raise StoreError(
                f"{ledger.where} is damaged: its schema ledger (table {LEDGER}) holds the "
                f"row ({version!r}, {name!r}), which undying never writes; {ledger.remedy}"
            )
        applied.add(version)
    highest = max(applied, default=0)
    missing = sorted(v for v in known if v < highest and v not in applied)
    if missing:
        raise StoreError(
            f"{ledger.where} is damaged: its schema ledger (table {LEDGER}) lacks "
            f"migration(s) {missing} below version {highest}; {ledger.remedy}"
        )
    newest = max(known, default=0)
    if highest > newest:
        raise StoreError(
            f"{ledger.where} has schema version {highest}, newer than this undying knows "
            f"({newest}): upgrade undying (or open a copy made before the upgrade)"
        )
    return applied
