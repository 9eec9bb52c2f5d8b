"""The systems compared, each in one configuration, and where each keeps its data.

A contender is one system on one backend with one durability setting. Each measurement gets
fresh storage: a new SQLite file in the run's temp dir, or a new PostgreSQL database created
on the server and dropped afterwards; Temporal's workloads share one dev server per driver
run (its own SQLite file), except storage, which starts a dev server on a fresh file for
each measurement so that the file holds that one workflow and nothing else.

Every peer is compared with the undying configuration of the same durability: the SQLite
peers fsync every commit (SQLite's default ``synchronous=FULL``, which none of them changes),
so they are compared with ``App(durability="full")``; DBOS on PostgreSQL with undying on the
same server. ``undying-sqlite-normal`` (the default, WAL + ``synchronous=NORMAL``: survives
process crashes, not power loss) is measured alongside for information.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import _common as common


@dataclass(frozen=True)
class Contender:
    key: str
    system: str  # module bench/peers/sys_<system>.py
    backend: str  # "sqlite" or "postgres"
    label: str
    config: str  # what the docs table says about its durability settings
    child_args: tuple[str, ...] = field(default=())

    @property
    def is_undying(self) -> bool:
        return self.system == "undying"


CONTENDERS = {
    c.key: c
    for c in (
        Contender(
            "undying-sqlite-normal",
            "undying",
            "sqlite",
            "undying, SQLite, durability=normal",
            "WAL, synchronous=NORMAL (the default: survives a process crash, not power loss)",
            ("--durability", "normal"),
        ),
        Contender(
            "undying-sqlite-full",
            "undying",
            "sqlite",
            "undying, SQLite, durability=full",
            "WAL, synchronous=FULL (every commit fsynced)",
            ("--durability", "full"),
        ),
        Contender(
            "undying-postgres",
            "undying",
            "postgres",
            "undying, PostgreSQL",
            "server's synchronous_commit (on)",
        ),
        Contender(
            "dbos-sqlite",
            "dbos",
            "sqlite",
            "DBOS Transact, SQLite",
            "DBOS defaults: rollback journal (DELETE), synchronous=FULL; sync @DBOS.workflow/step",
            ("--dbos-api", "sync"),
        ),
        Contender(
            "dbos-postgres",
            "dbos",
            "postgres",
            "DBOS Transact, PostgreSQL",
            "server's synchronous_commit (on); sync @DBOS.workflow/step",
            ("--dbos-api", "sync"),
        ),
        Contender(
            "langgraph-sqlite",
            "langgraph",
            "sqlite",
            "LangGraph, SqliteSaver",
            "SqliteSaver: WAL, synchronous=FULL; invoke(durability='sync')",
            ("--langgraph-durability", "sync"),
        ),
        Contender(
            "temporal-sqlite",
            "temporal",
            "sqlite",
            "Temporal dev server (SQLite file)",
            "start-dev --db-filename: rollback journal, synchronous=FULL; worker in-process",
        ),
    )
}

#: peer -> the undying configuration it is compared with (same durability)
COMPARED_WITH = {
    "dbos-sqlite": "undying-sqlite-full",
    "langgraph-sqlite": "undying-sqlite-full",
    "temporal-sqlite": "undying-sqlite-full",
    "dbos-postgres": "undying-postgres",
}


def select(systems: list[str], postgres: bool) -> list[Contender]:
    """The contenders of the chosen systems (undying always), PostgreSQL ones if wanted."""
    wanted = {"undying", *systems}
    return [
        c
        for c in CONTENDERS.values()
        if c.system in wanted and (postgres or c.backend != "postgres")
    ]


# -- storage -----------------------------------------------------------------------------------
class Storage:
    """Fresh SQLite files under one temp dir; fresh PostgreSQL databases on one server."""

    def __init__(self, root: Path, server: str) -> None:
        self.files = common.FreshFiles(root)
        self.server = server

    def sqlite_path(self, label: str) -> Path:
        return Path(self.files.path(label))

    @contextlib.contextmanager
    def postgres_db(self) -> Iterator[str]:
        import psycopg
        from psycopg import sql

        name = f"peers_bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.server, autocommit=True, connect_timeout=10) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield urlsplit(self.server)._replace(path=f"/{name}").geturl()
        finally:
            with psycopg.connect(self.server, autocommit=True, connect_timeout=10) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def db_argument(contender: Contender, path: Path) -> str:
    """How the contender's child is told where its SQLite file is."""
    return f"sqlite:///{path}" if contender.system == "dbos" else str(path)


def sqlite_bytes(path: Path) -> int:
    """Bytes the data needs: the WAL checkpointed into the file, free pages vacuumed away."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("VACUUM")
    return sum(os.path.getsize(p) for p in (path, Path(f"{path}-wal")) if os.path.exists(p))
