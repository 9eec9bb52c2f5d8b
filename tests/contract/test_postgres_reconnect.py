"""PostgreSQL only: a store rides out the loss of every connection (a server restart, an
admin's ``pg_terminate_backend``) without the caller seeing an error, and takes its worker
lock back so other workers keep treating it as alive."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg

from undying.store.base import NewRun
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
