"""PostgreSQL only: a store rides out the loss of every connection (a server restart, an
admin's ``pg_terminate_backend``) without the caller seeing an error, and takes its worker
lock back so other workers keep treating it as alive."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from undying.store.base import NewRun
from undying.store.pg_session import is_stale
from undying.store.postgres import PostgresStore

NOW = time.time()


def _kill_sessions(admin: psycopg.Connection[tuple[object, ...]]) -> int:
    cur = admin.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    row = cur.fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]


def _lock_held(admin: psycopg.Connection[tuple[object, ...]], worker_id: str) -> bool:
    row = admin.execute(
        "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (worker_id,)
    ).fetchone()
    if row and row[0]:
        admin.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (worker_id,))
        return False
    return True


def test_store_survives_losing_every_connection(pg_url: str, pg_cleaner: Any) -> None:
    pg_cleaner.clean()
    admin: psycopg.Connection[tuple[object, ...]] = pg_cleaner.conn

    async def body() -> None:
        a, b = PostgresStore(pg_url), PostgresStore(pg_url)
        await a.open("worker-a")
        await b.open("worker-b")
        try:
            await a.create_run(NewRun("before", "wf", b""), owner=None, lease_expires=0, now=NOW)
            assert await b.wait_for_change(2)
            assert _lock_held(admin, "worker-a")

            assert _kill_sessions(admin) >= 4  # two pools, two lifelines
            # A broken lifeline is reported as a change (something may have been missed),
            # never raised.
            assert await b.wait_for_change(5) is True

            # Pooled connections are replaced transparently.
            started = time.monotonic()
            created, _ = await a.create_run(
                NewRun("after", "wf", b""), owner="worker-a", lease_expires=NOW + 60, now=NOW
            )
            assert created
            assert (await b.get_run("before")) is not None
            # Not a timing test: without the stale check a checkout waits for the pool's own
            # reconnect backoff and timeout (30 s); 5 s leaves room for a loaded machine.
            assert time.monotonic() - started < 5.0

            # The lifeline comes back and takes the worker lock again...
            deadline = time.monotonic() + 5
            while not _lock_held(admin, "worker-a"):
                assert time.monotonic() < deadline, "worker-a never took its lock back"
                await asyncio.sleep(0.05)
            # ...so worker-b does not mistake the live worker-a for a dead one.
            claims = await b.claim(
                "worker-b",
                now=NOW,
                lease_expires=NOW + 60,
                limit=10,
                queues={},
                running_per_queue={},
            )
            assert [c.run.run_id for c in claims] == ["before"]  # the pending one only

            # And notifications flow again.
            while await b.wait_for_change(0.05):
                pass
            await a.send_event("after", "ping", b"", None, NOW)
            assert await b.wait_for_change(5) is True
        finally:
            await a.close()
            await b.close()

    asyncio.run(body())


def test_a_statement_meeting_a_session_ended_too_recently_to_see_is_retried(
    pg_url: str, pg_cleaner: Any
) -> None:
    """The race behind an intermittent AdminShutdown under load: the server process of a
    pooled connection has been told to terminate but has not acted on it yet, so the
    connection looks alive at checkout and the statement sent on it meets the FATAL.

    Reproduced for real, not by timing: that server process is paused (SIGSTOP, for a few
    milliseconds) while it is terminated and until the statement is on its way, then
    continued; it acts on the termination before it can execute anything."""
    pg_cleaner.clean()
    admin: psycopg.Connection[tuple[object, ...]] = pg_cleaner.conn

    async def body() -> None:
        store = PostgresStore(pg_url, pool_size=1)  # one pooled connection: the one paused
        await store.open("worker-a")
        try:
            conn = await store.pool.getconn()
            pid = conn.info.backend_pid
            await store.pool.putconn(conn)
            os.kill(pid, signal.SIGSTOP)
            try:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                assert not is_stale(conn)  # the race: nothing to see at checkout yet
                creating = asyncio.ensure_future(
                    store.create_run(NewRun("r1", "wf", b""), owner=None, lease_expires=0, now=NOW)
                )
                deadline = time.monotonic() + 5
                while conn.info.transaction_status != TransactionStatus.ACTIVE:  # sent
                    assert time.monotonic() < deadline, "the statement was never sent"
                    assert not creating.done(), creating
                    await asyncio.sleep(0.001)
            finally:
                os.kill(pid, signal.SIGCONT)
            created, record = await creating
            assert created and record.run_id == "r1"
            assert (await store.get_run("r1")) == record
            assert conn.broken  # it was that connection, and it is gone
        finally:
            await store.close()

    asyncio.run(body())


def test_writes_one_after_another_share_one_warm_session(pg_url: str, pg_cleaner: Any) -> None:
    """The connection last handed back is handed out again (not the pool's next idle one),
    so sequential statements wake one server process; once the server ends it, it is
    replaced like any pooled connection."""
    pg_cleaner.clean()
    admin: psycopg.Connection[tuple[object, ...]] = pg_cleaner.conn

    async def body() -> None:
        store = PostgresStore(pg_url)
        await store.open("worker-a")
        try:
            async with store.sessions.conn() as first, store.sessions.conn() as second:
                pids = {first.info.backend_pid, second.info.backend_pid}
            assert len(pids) == 2  # two in use at once: two sessions, one of them now warm
            seen = set()
            for i in range(5):
                await store.create_run(
                    NewRun(f"r{i}", "wf", b""), owner=None, lease_expires=0, now=NOW
                )
                async with store.sessions.conn() as conn:
                    seen.add(conn.info.backend_pid)
            assert len(seen) == 1 and seen <= pids, (seen, pids)
            [warm] = seen
            admin.execute("SELECT pg_terminate_backend(%s)", (warm,))
            deadline = time.monotonic() + 5
            while admin.execute(
                "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (warm,)
            ).fetchone():
                assert time.monotonic() < deadline, "the server process never ended"
                await asyncio.sleep(0.01)
            created, _ = await store.create_run(
                NewRun("after", "wf", b""), owner=None, lease_expires=0, now=NOW
            )
            assert created
            async with store.sessions.conn() as conn:
                assert conn.info.backend_pid != warm
        finally:
            await store.close()

    asyncio.run(body())
