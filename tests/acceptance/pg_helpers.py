"""Helpers for the PostgreSQL acceptance tests (not a test module).

The server is ``$UNDYING_TEST_PG_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``,
trust auth), the same one the contract suite uses. Each test creates a database of its own
and drops it at the end. An unreachable server fails the test with a message; it never skips.

Worker processes are real ``python -m undying worker pg_worker_app:app`` processes, started
in this directory so the app module imports. Waiting is done on their output lines or on
database state, re-checked whenever PostgreSQL delivers a notification on undying's channel
(every finished run sends one) and at least every ``RECHECK`` seconds, up to a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from undying.store.postgres import PostgresStore

PG_SERVER = os.environ.get("UNDYING_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
HERE = Path(__file__).resolve().parent
#: longest pause between two checks of a condition when no notification arrives
RECHECK = 0.2

T = TypeVar("T")

# -- databases ---------------------------------------------------------------------------------


def admin_connect(url: str = PG_SERVER) -> psycopg.Connection[Any]:
    """An autocommit connection to ``url``; fails the test (never skips) if it cannot."""
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"the PostgreSQL acceptance tests need a server at {url} (set UNDYING_TEST_PG_URL "
            f"to another one); connecting failed: {exc}",
            pytrace=False,
        )


def _database_url(server_url: str, name: str) -> str:
    if "://" not in server_url:  # a key=value conninfo string
        return make_conninfo(server_url, dbname=name)
    return urlsplit(server_url)._replace(path=f"/{name}").geturl()


@contextlib.contextmanager
def fresh_database(server_url: str = PG_SERVER) -> Iterator[str]:
    """A brand-new database migrated to undying's schema; yields its URL, drops it after."""
    name = f"undying_accept_{uuid.uuid4().hex[:12]}"
    with admin_connect(server_url) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = _database_url(server_url, name)
        asyncio.run(PostgresStore(url).migrate())
        yield url
    finally:
        # A fresh connection: the one above may not have survived a server restart.
        with admin_connect(server_url) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


class Db:
    """A test's own view of its database: queries, and waiting for a condition.

    It LISTENs on undying's notification channel, so a wait re-checks its condition as soon
    as something happened (a run finished) and otherwise every ``RECHECK`` seconds. After a
    server restart the connection is re-opened on first use."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            self._conn = admin_connect(self.url)
            self._conn.execute("LISTEN undying")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def rows(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self._connection().execute(query, params).fetchall()

    def value(self, query: str, params: Any = None) -> Any:
        row = self._connection().execute(query, params).fetchone()
        return None if row is None else row[0]

    def execute(self, query: str, params: Any = None) -> None:
        self._connection().execute(query, params)

    def wait(self, check: Callable[[], T], timeout: float, what: str | Callable[[], str]) -> T:
        """Return ``check()``'s first truthy value; fail naming ``what`` at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            left = deadline - time.monotonic()
            if left <= 0:
                message = what() if callable(what) else what
                pytest.fail(f"gave up after {timeout:.0f} s waiting for {message}", pytrace=False)
            # Consume notifications until one arrives or RECHECK passes: no blind sleep.
            for _ in self._connection().notifies(timeout=min(RECHECK, left), stop_after=1):
                pass

    def count(self, query: str, params: Any = None) -> int:
        return int(self.value(query, params) or 0)


def poll_until(
    check: Callable[[], T], timeout: float, what: str | Callable[[], str], every: float = 0.05
) -> T:
    """Return ``check()``'s first truthy value, polling a condition that sends no notification
    (a process state, a log file, a SQLite file); fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            message = what() if callable(what) else what
            pytest.fail(f"gave up after {timeout:.0f} s waiting for {message}", pytrace=False)
        time.sleep(every)  # pacing of the poll, not synchronisation: the condition decides


# -- worker processes ------------------------------------------------------------------------


class WorkerProcess:
    """One ``undying worker <app>`` process (by default ``pg_worker_app:app``) on ``url``, a
    PostgreSQL URL or a SQLite file; stderr goes to a file."""

    def __init__(
        self,
        url: str,
        log_dir: Path,
        index: int,
        env: dict[str, str],
        app: str = "pg_worker_app:app",
    ) -> None:
        self.index = index
        self.stderr_path = log_dir / f"worker-{index}.stderr"
        self._stderr = self.stderr_path.open("w")
        full_env = {**os.environ, **env, "UNDYING_DATABASE_URL": url, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "undying", "worker", app],
            cwd=HERE,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.pid = self.proc.pid
        self.worker_id = ""
        self.stopped = False

    def wait_ready(self) -> str:
        """Block until the worker printed its banner; return its worker id."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("undying worker "):
            self.proc.wait(30)
            pytest.fail(
                f"worker {self.index} did not start (exit {self.proc.returncode}): {line!r}\n"
                f"{self.stderr()}",
                pytrace=False,
            )
        self.worker_id = line.split()[2]
        return self.worker_id

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text()

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)
        if sig == signal.SIGSTOP:
            self.stopped = True
        elif sig == signal.SIGCONT:
            self.stopped = False

    def state(self) -> str:
        """The kernel's state letter for the process (``T`` when stopped)."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except FileNotFoundError:
            return "gone"
        return stat.rsplit(")", 1)[1].split()[0]

    def terminate_gracefully(self, timeout: float = 60) -> tuple[int, str]:
        """SIGTERM, wait; returns (exit code, the rest of its stdout)."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out

    def cleanup(self) -> None:
        """Whatever happened: no process left behind, every file and pipe closed."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if self.stopped:
                    os.kill(self.pid, signal.SIGCONT)
                self.proc.kill()
            self.proc.wait(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


@contextlib.contextmanager
def workers(
    url: str, log_dir: Path, count: int, env: dict[str, str] | None = None
) -> Iterator[list[WorkerProcess]]:
    """``count`` worker processes, started together, each ready (banner printed)."""
    started: list[WorkerProcess] = []
    try:
        for i in range(count):
            started.append(WorkerProcess(url, log_dir, i, env or {}))
        for worker in started:
            worker.wait_ready()
        yield started
    finally:
        for worker in started:
            worker.cleanup()


# -- the server itself ---------------------------------------------------------------------------


def cluster_version() -> str:
    versions = sorted(os.listdir("/etc/postgresql"))
    if len(versions) != 1:
        pytest.fail(f"expected one PostgreSQL cluster under /etc/postgresql, found {versions}")
    return versions[0]


def pg_ctlcluster(action: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``pg_ctlcluster <version> main <action>`` (pg_ctl waits until the action is done)."""
    return subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", cluster_version(), "main", action],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def server_ready(host: str = "127.0.0.1") -> bool:
    done = subprocess.run(
        ["pg_isready", "-h", host, "-t", "5"], capture_output=True, text=True, check=False
    )
    return done.returncode == 0


def ensure_server_running(timeout: float = 60) -> None:
    """Start the cluster if it is down; ``pg_ctl start`` waits until it accepts connections."""
    if server_ready():
        return
    started = pg_ctlcluster("start", timeout=timeout)
    if not server_ready():
        pytest.fail(
            "PostgreSQL did not come back up after the restart test: "
            f"{started.stdout}{started.stderr}",
            pytrace=False,
        )
