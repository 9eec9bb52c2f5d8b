"""The PostgreSQL store: any number of workers, on any number of machines, share one database.

Connections come from a pool in autocommit mode, so a single statement is its own transaction:
the hot path, a fenced journal append, costs one round trip. Writes that must change several
rows together (finish a run with its last entries, wake its parent, notify) are also one
statement, with data-modifying CTEs; when the epoch fence refuses any part of one, the SQL
function ``undying_fence`` raises and the whole statement rolls back. Commits are always
durable (``synchronous_commit`` stays on), so both durability settings behave the same here.

Fencing: every write for a run checks its epoch *and* locks the run row in the same statement
(``FOR SHARE``, or the UPDATE's own lock), until it commits. An epoch check alone reads the
statement's snapshot, and a takeover committing while the write is in flight would not stop
it; with the lock, a takeover either commits first (the write waits, re-reads the row and is
refused) or waits for the write (and its replay sees it). queries.sql explains the lock modes.

Liveness: each open store keeps one connection of its own outside the pool, the *lifeline*.
It holds a session advisory lock keyed by the worker id and ``LISTEN``s for changes. PostgreSQL
frees the lock the moment that session ends, so another worker can tell a dead owner from a
slow one at once (``pg_try_advisory_lock`` succeeds) instead of waiting for its lease to
expire. The lease epoch still fences an owner that was only paused or cut off.

Change notification: writes that make work available ``NOTIFY undying`` in the same
transaction, with this store's random token as payload so the lifeline can ignore its own
notifications (SQLite's ``data_version`` ignores a connection's own commits the same way).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from ..errors import InvalidArgument, LeaseLost, RunNotFound, StoreError
from .base import (
    CANCELLED,
    PENDING,
    RUNNING,
    Claim,
    Entry,
    EventRecord,
    NewRun,
    QueueLimits,
    RunFilter,
    RunRecord,
    Store,
    TransactionFnFailed,
    UsageRow,
    UsageTotal,
    child_event_name,
    fence_error,
    usage_params,
    wait_key,
)
from .pg_session import (
    CONNECT_TIMEOUT,
    KEEPALIVES,
    RECONNECT_DELAYS,
    SESSION_OPTIONS,
    is_stale,
    redact,
)
from .sqlfiles import migrations, queries

try:
    import psycopg
    from psycopg import AsyncConnection, AsyncCursor
    from psycopg_pool import AsyncConnectionPool, PoolTimeout
except ImportError as _missing:  # pragma: no cover - depends on the installation
    raise StoreError(
        "PostgreSQL support needs psycopg 3: pip install 'undying[postgres]'"
    ) from _missing

DURABILITY = ("normal", "full")
#: payloads up to this size come with the journal metadata; larger ones load lazily
INLINE_PAYLOAD = 512
#: how long a worker found dead is trusted to stay dead without probing its lock again
DEAD_OWNER_TTL = 30.0
#: SQLSTATE raised by the schema's undying_fence() when a fenced write was refused
FENCE_SQLSTATE = "UD001"
log = logging.getLogger("undying.store.postgres")

Conn = AsyncConnection[Any]
Cursor = AsyncCursor[Any]
#: statements whose row counts decide whether a fenced write went through
Checks = list[tuple[Cursor, int]]


class _WorkerIdTaken(Exception):
    """Another live session holds this worker id's lock."""


class PostgresStore(Store):
    """A store on one PostgreSQL database, shared by every worker."""

    def __init__(self, url: str, *, durability: str = "normal", pool_size: int = 10) -> None:
        if durability not in DURABILITY:
            raise InvalidArgument(
                f"durability must be one of {sorted(DURABILITY)}, not {durability!r}: on "
                "PostgreSQL every commit is durable, so both survive a crash and power loss"
            )
        if not isinstance(pool_size, int) or pool_size < 1:
            raise InvalidArgument(f"pool_size must be a positive integer, not {pool_size!r}")
        self.url = url
        self.durability = durability
        self._pool_size = pool_size
        self._q = queries("postgres")
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._lifeline: Conn | None = None
        self._listener: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._token = uuid.uuid4().hex
        self._worker_id = ""
        self._dead: dict[str, float] = {}
        self._closing = False

    # -- lifecycle ----------------------------------------------------------------------------
    async def open(self, worker_id: str) -> None:
        self._worker_id = worker_id
        self._closing = False
        self._changed = asyncio.Event()
        try:
            # The lifeline first: a direct connection fails fast with the server's own
            # message (the pool would retry until its timeout), and it runs the migrations.
            try:
                self._lifeline = await self._connect_lifeline()
            except _WorkerIdTaken as exc:
                raise StoreError(
                    f"worker id {worker_id!r} is already held by a live session; "
                    "each worker needs its own id"
                ) from exc
            await self._migrate(self._lifeline)
            self._pool = AsyncConnectionPool(
                self.url,
                min_size=1,
                max_size=self._pool_size,
                open=False,
                kwargs={"autocommit": True, "options": SESSION_OPTIONS},
                name="undying",
            )
            try:
                await self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
            except PoolTimeout as exc:
                raise StoreError(
                    f"cannot fill a connection pool for {redact(self.url)} within "
                    f"{CONNECT_TIMEOUT:.0f} s"
                ) from exc
        except BaseException:
            await self.close()
            raise
        self._listener = asyncio.ensure_future(self._listen())

    async def close(self) -> None:
        self._closing = True
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        if self._lifeline is not None:
            # Free the lock now rather than when the server notices the socket closed, so a
            # graceful shutdown is seen as dead by other workers at once.
            with contextlib.suppress(Exception):
                await self._lifeline.execute(self._q["unlock_worker"], (self._worker_id,))
            with contextlib.suppress(Exception):
                await self._lifeline.close()
            self._lifeline = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def migrate(self) -> list[str]:
        conn = await self._connect()
        try:
            return await self._migrate(conn)
        finally:
            await conn.close()

    async def _connect(self, **extra: Any) -> Conn:
        try:
            return await AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT), **extra
            )
        except psycopg.OperationalError as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {redact(self.url)}: {exc}") from exc

    async def _migrate(self, conn: Conn) -> list[str]:
        """Apply every pending migration in one transaction, under a lock that makes workers
        starting together against an empty database wait for one another instead of racing."""
        done: list[str] = []
        async with conn.transaction():
            await conn.execute(self._q["lock_migrations"])
            await conn.execute(self._q["create_migrations_table"])
            cur = await conn.execute(self._q["applied_migrations"])
            applied = {row[0] for row in await cur.fetchall()}
            known = migrations("postgres")
            newest = max((v for v, _, _ in known), default=0)
            if applied and max(applied) > newest:
                raise StoreError(
                    f"{redact(self.url)} has schema version {max(applied)}, newer than this "
                    f"undying knows ({newest}); upgrade undying"
                )
            for version, name, sql in known:
                if version not in applied:
                    await conn.execute(sql)
                    await conn.execute(self._q["record_migration"], (version, name, time.time()))
                    done.append(name)
        return done

    async def _connect_lifeline(self) -> Conn:
        conn = await self._connect(**KEEPALIVES)
        try:
            cur = await conn.execute(self._q["lock_worker"], (self._worker_id,))
            row = await cur.fetchone()
            if row is None or not row[0]:
                raise _WorkerIdTaken(f"worker id {self._worker_id!r} is locked by another session")
            await conn.execute(self._q["listen"])
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _listen(self) -> None:
        """Forward other stores' notifications to ``wait_for_change``, and keep the lifeline
        up: if it breaks, reconnect with backoff and take the worker lock again. Every break
        counts as a change, since notifications may have been missed meanwhile."""
        failures = 0
        while not self._closing:
            try:
                if self._lifeline is None:
                    self._lifeline = await self._connect_lifeline()
                    log.info("lifeline to %s re-established", redact(self.url))
                    self._changed.set()
                failures = 0
                async with contextlib.aclosing(self._lifeline.notifies()) as notes:
                    async for note in notes:
                        if note.payload != self._token:
                            self._changed.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._changed.set()
                if self._lifeline is not None:
                    with contextlib.suppress(Exception):
                        await self._lifeline.close()
                    self._lifeline = None
                delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
                failures += 1
                log.warning("lifeline to PostgreSQL lost (%s); reconnecting in %.2f s", exc, delay)
                await asyncio.sleep(delay)

    @property
    def pool(self) -> AsyncConnectionPool[Conn]:
        if self._pool is None:
            raise StoreError("the store is not open: use `async with app:` first")
        return self._pool

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[Conn]:
        """A pooled connection the server has not ended.

        After a PostgreSQL restart every pooled connection is dead. A ping on each checkout
        would cost a round trip per write, and the pool's own ``check`` sleeps (backoff)
        after each failure; instead a dead connection is spotted for free (``_stale``),
        closed, and handed back, which makes the pool open a replacement, and the next one
        is taken at once.
        """
        pool = self.pool
        conn = await pool.getconn()
        for _ in range(self._pool_size):
            if not is_stale(conn):
                break
            with contextlib.suppress(Exception):
                await conn.close()
            await pool.putconn(conn)
            conn = await pool.getconn()
        try:
            yield conn
        finally:
            await pool.putconn(conn)

    async def _verify(self, conn: Conn, run_id: str, epoch: int, checks: Checks) -> None:
        """Raise ``LeaseLost`` (rolling the transaction back) if a fenced write missed."""
        if any(cur.rowcount != expected for cur, expected in checks):
            raise await self._fence_failed(conn, run_id, epoch)

    async def _fenced(
        self,
        query: str,
        params: dict[str, Any],
        run_id: str,
        epoch: int,
        entries: Sequence[Entry] | None = None,
    ) -> list[tuple[Any, ...]]:
        """Run a statement that ends with ``undying_fence``, and turn a refusal into
        ``LeaseLost``. Returns its rows. With ``entries``, the statement appends them as
        well (its ``e_*`` array parameters).

        One INSERT cannot touch the same journal row twice, so a batch that rewrites a
        position (an intent, then its outcome) goes entry by entry first, in one transaction
        with the statement, which then gets no entries of its own.
        """
        batch = list(entries or ())
        in_order = len({e.seq for e in batch}) == len(batch)
        if entries is not None:
            params = {**params, **_entry_arrays(batch if in_order else [])}
        async with self._conn() as conn:
            try:
                if in_order:
                    cur = await conn.execute(query, params, prepare=True)
                    return await cur.fetchall()
                async with conn.transaction():
                    checks = await self._append(conn, run_id, epoch, batch)
                    await self._verify(conn, run_id, epoch, checks)
                    cur = await conn.execute(query, params, prepare=True)
                    return await cur.fetchall()
            except psycopg.Error as exc:
                if exc.sqlstate != FENCE_SQLSTATE:
                    raise
            raise await self._fence_failed(conn, run_id, epoch)

    async def _fence_failed(self, conn: Conn, run_id: str, epoch: int) -> LeaseLost:
        cur = await conn.execute(self._q["check_epoch"], (run_id,))
        row = await cur.fetchone()
        return fence_error(run_id, epoch, None if row is None else int(row[0]))

    # -- runs -----------------------------------------------------------------------------------
    async def create_run(
        self, run: NewRun, *, owner: str | None, lease_expires: float, now: float
    ) -> tuple[bool, RunRecord]:
        status, epoch = (RUNNING, 1) if owner else (PENDING, 0)
        params = {
            "run_id": run.run_id,
            "workflow": run.workflow,
            "status": status,
            "input": run.input,
            "owner": owner,
            "lease_expires": lease_expires if owner else None,
            "epoch": epoch,
            "parent_id": run.parent_id,
            "queue": run.queue,
            "priority": run.priority,
            "deadline": run.deadline,
            "now": now,
            "token": self._token,
        }
        async with self._conn() as conn:
            cur = await conn.execute(self._q["insert_run"], params, prepare=True)
            row = await cur.fetchone()
            if row is not None:
                return True, RunRecord(*row[:-1])  # the last column is the notification
            cur = await conn.execute(self._q["get_run"], (run.run_id,), prepare=True)
            row = await cur.fetchone()
        assert row is not None, "a run that conflicted on insert cannot vanish (runs are kept)"
        return False, RunRecord(*row)

    async def get_run(self, run_id: str) -> RunRecord | None:
        async with self._conn() as conn:
            cur = await conn.execute(self._q["get_run"], (run_id,), prepare=True)
            row = await cur.fetchone()
        return RunRecord(*row) if row else None

    async def list_runs(self, flt: RunFilter) -> list[RunRecord]:
        async with self._conn() as conn:
            cur = await conn.execute(self._q["list_runs"], asdict(flt))
            return [RunRecord(*row) for row in await cur.fetchall()]

    async def count_runs_by_status(self, flt: RunFilter) -> dict[str, int]:
        async with self._conn() as conn:
            cur = await conn.execute(self._q["count_runs_by_status"], asdict(flt))
            return {status: int(count) for status, count in await cur.fetchall()}

    async def list_workflows(self) -> list[str]:
        async with self._conn() as conn:
            cur = await conn.execute(self._q["list_workflows"])
            return [str(name) for (name,) in await cur.fetchall()]

    async def list_events(self, run_id: str, limit: int = 1000) -> list[EventRecord]:
        async with self._conn() as conn:
            cur = await conn.execute(self._q["list_events"], (run_id, limit))
            return [
                EventRecord(name, key, bytes(payload), created_at, consumed_seq)
                for name, key, payload, created_at, consumed_seq in await cur.fetchall()
            ]

    async def _append(
        self, conn: Conn, run_id: str, epoch: int, entries: Sequence[Entry]
    ) -> Checks:
        """Append ``entries`` one statement each; the caller verifies the returned checks."""
        sql = self._q["append_entry"]
        return [
            (await conn.execute(sql, (*e.as_row(run_id), run_id, epoch), prepare=True), 1)
            for e in entries
        ]

    async def _wake_parent(self, conn: Conn, child_id: str, now: float) -> None:
        """Leave the finished (or cancelled) child's event for its parent and wake the parent
        if it waits for it."""
        params = {"child": child_id, "name": child_event_name(child_id), "now": now}
        await conn.execute(self._q["insert_child_event"], params, prepare=True)
        await conn.execute(self._q["wake_parent"], params, prepare=True)

    async def finish_run(
        self,
        run_id: str,
        epoch: int,
        status: str,
        *,
        output: bytes | None,
        error: bytes | None,
        pending: Sequence[Entry],
        now: float,
    ) -> None:
        params = {
            "status": status,
            "output": output,
            "error": error,
            "now": now,
            "run_id": run_id,
            "epoch": epoch,
            "event": child_event_name(run_id),
            "token": self._token,  # every end is announced: parents wake, clients wait
        }
        await self._fenced(self._q["finish_run"], params, run_id, epoch, pending)

    async def suspend_run(
        self,
        run_id: str,
        epoch: int,
        *,
        wake_at: float | None,
        wait_events: Iterable[str],
        pending: Sequence[Entry],
        now: float,
    ) -> None:
        params = {
            "key": wait_key(wait_events),
            "wake_at": wake_at,
            "now": now,
            "run_id": run_id,
            "epoch": epoch,
            "token": self._token,
        }
        await self._fenced(self._q["suspend_run"], params, run_id, epoch, pending)

    async def release_runs(self, owner: str, run_ids: Iterable[str], now: float) -> None:
        ids = list(run_ids)
        if not ids:
            return
        params = {"now": now, "run_ids": ids, "owner": owner, "token": self._token}
        async with self._conn() as conn:
            await conn.execute(self._q["release_runs"], params)

    async def resume_run(self, run_id: str, now: float) -> bool:
        params = {"now": now, "run_id": run_id, "token": self._token}
        async with self._conn() as conn:
            cur = await conn.execute(self._q["resume_run"], params)
            return cur.rowcount == 1

    async def set_status_value(self, run_id: str, epoch: int, value: bytes) -> None:
        async with self._conn() as conn:
            cur = await conn.execute(
                self._q["set_status_value"], (value, time.time(), run_id, epoch), prepare=True
            )
            if cur.rowcount != 1:
                raise await self._fence_failed(conn, run_id, epoch)

    async def continue_as_new(self, run_id: str, epoch: int, new_input: bytes, now: float) -> None:
        params = {"now": now, "run_id": run_id, "epoch": epoch, "input": new_input}
        async with self._conn() as conn:
            cur = await conn.execute(self._q["continue_as_new"], params)
            if cur.rowcount != 1:
                raise await self._fence_failed(conn, run_id, epoch)

    # -- claiming and leases ------------------------------------------------------------------
    async def _dead_owners(self, conn: Conn, me: str) -> list[str]:
        """Owners of running runs whose session lock is free: their session is gone.

        Known-dead owners are cached, but only for ``DEAD_OWNER_TTL``: a worker whose lifeline
        merely reconnected takes its lock back, and must not lose every new run for good.
        """
        clock = time.monotonic()
        self._dead = {o: t for o, t in self._dead.items() if clock - t < DEAD_OWNER_TTL}
        cur = await conn.execute(
            self._q["probe_dead_owners"], {"me": me, "known": list(self._dead)}
        )
        for owner, _ in await cur.fetchall():
            self._dead[owner] = clock
        return list(self._dead)

    async def claim(
        self,
        owner: str,
        *,
        now: float,
        lease_expires: float,
        limit: int,
        queues: Mapping[str, QueueLimits],
        running_per_queue: Mapping[str, int],
    ) -> list[Claim]:
        if limit <= 0:
            return []
        claims: list[Claim] = []
        base = {"owner": owner, "lease_expires": lease_expires, "now": now}
        shared = sorted(
            {
                n
                for key, q in queues.items()
                if q.concurrency is not None or q.rate_limit
                for n in (key, q.name)
            }
        )
        async with self._conn() as conn, conn.transaction():
            if shared:
                # Held until commit, so counting a queue's runs and claiming from it is atomic
                # across workers, and the limits hold globally.
                await conn.execute(self._q["lock_queues"], (shared,))
            dead = await self._dead_owners(conn, owner)
            cur = await conn.execute(
                self._q["take_over"], {**base, "dead": dead, "limit": limit}, prepare=True
            )
            rows = await cur.fetchall()
            claims += [Claim(RunRecord(*r), takeover=True) for r in rows]
            limit -= len(rows)
            for name, limits in queues.items():
                allowed = min(
                    limit, await self._queue_room(conn, limits, running_per_queue.get(name, 0), now)
                )
                if allowed <= 0:
                    continue
                cur = await conn.execute(
                    self._q["claim_queue"], {**base, "queue": name, "limit": allowed}, prepare=True
                )
                rows = await cur.fetchall()
                if limits.rate_limit and rows:
                    await conn.execute(self._q["record_queue_starts"], (name, now, len(rows)))
                claims += [Claim(RunRecord(*r)) for r in rows]
                limit -= len(rows)
            if limit > 0:
                cur = await conn.execute(
                    self._q["claim_due"],
                    {**base, "limit": limit},
                    prepare=True,
                )
                claims += [Claim(RunRecord(*r)) for r in await cur.fetchall()]
        return claims

    async def _queue_room(self, conn: Conn, limits: QueueLimits, mine: int, now: float) -> int:
        room = 1 << 30
        if limits.worker_concurrency is not None:
            room = min(room, limits.worker_concurrency - mine)
        if limits.concurrency is not None:
            cur = await conn.execute(self._q["count_queue_running"], (limits.name,))
            row = await cur.fetchone()
            room = min(room, limits.concurrency - (row[0] if row else 0))
        if limits.rate_limit is not None:
            count, per = limits.rate_limit
            await conn.execute(self._q["prune_queue_starts"], (limits.name, now - per))
            cur = await conn.execute(self._q["count_queue_started_since"], (limits.name, now - per))
            row = await cur.fetchone()
            room = min(room, count - (row[0] if row else 0))
        return room

    async def heartbeat(
        self, owner: str, lease_expires: float, run_ids: Sequence[str]
    ) -> list[str]:
        async with self._conn() as conn:
            cur = await conn.execute(
                self._q["heartbeat"], (lease_expires, owner, list(run_ids)), prepare=True
            )
            return [row[0] for row in await cur.fetchall()]

    async def cancel_requests(self, owner: str) -> list[str]:
        async with self._conn() as conn:
            cur = await conn.execute(self._q["cancelled_owned"], (owner,), prepare=True)
            return [row[0] for row in await cur.fetchall()]

    async def next_wake_at(self) -> float | None:
        async with self._conn() as conn:
            cur = await conn.execute(self._q["next_wake_at"], prepare=True)
            row = await cur.fetchone()
        return row[0] if row else None

    # -- journal ---------------------------------------------------------------------------------
    async def write_entries(
        self, run_id: str, epoch: int, entries: Sequence[Entry], *, durable: bool = False
    ) -> None:
        """``durable`` needs nothing extra: a PostgreSQL commit is flushed to the WAL."""
        if not entries:
            return
        if len(entries) == 1:
            # The hot path: one statement in autocommit mode is one transaction, one round trip.
            async with self._conn() as conn:
                checks = await self._append(conn, run_id, epoch, entries)
                await self._verify(conn, run_id, epoch, checks)
            return
        params = {"run_id": run_id, "epoch": epoch}
        await self._fenced(self._q["append_entries"], params, run_id, epoch, entries)

    async def load_journal_meta(self, run_id: str) -> list[Entry]:
        params = {"inline": INLINE_PAYLOAD, "run_id": run_id}
        async with self._conn() as conn:
            cur = await conn.execute(self._q["load_journal_meta"], params, prepare=True)
            rows = await cur.fetchall()
        return [_entry(row) for row in rows]

    async def load_payloads(self, run_id: str, seqs: Sequence[int]) -> dict[int, bytes]:
        if not seqs:
            return {}
        async with self._conn() as conn:
            cur = await conn.execute(self._q["load_payloads"], (run_id, list(seqs)), prepare=True)
            rows = await cur.fetchall()
        return {seq: payload for seq, payload in rows if payload is not None}

    async def copy_journal(self, src_run_id: str, dst_run_id: str, before_seq: int) -> int:
        async with self._conn() as conn:
            cur = await conn.execute(self._q["copy_journal"], (dst_run_id, src_run_id, before_seq))
            return cur.rowcount

    async def run_transaction(
        self,
        run_id: str,
        epoch: int,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        make_entries: Callable[[Any], Sequence[Entry]],
    ) -> Any:
        """``fn`` gets the ``psycopg.AsyncConnection`` inside the transaction; it may be async
        (awaited) or sync."""
        async with self._conn() as conn, conn.transaction():
            # Share-lock the run row at the current epoch: a take-over (FOR UPDATE SKIP
            # LOCKED) then skips the run until this transaction ends, so a paused worker
            # cannot commit its effect after the run changed hands.
            cur = await conn.execute(self._q["lock_run_epoch"], (run_id, epoch), prepare=True)
            if await cur.fetchone() is None:
                raise await self._fence_failed(conn, run_id, epoch)
            try:
                result = fn(conn, *args)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                if conn.broken:
                    raise  # the connection died under fn: transient, retried by the caller
                raise TransactionFnFailed(exc) from exc
            checks = await self._append(conn, run_id, epoch, make_entries(result))
            await self._verify(conn, run_id, epoch, checks)
        return result

    async def load_state(self, run_id: str, key: str, before_seq: int) -> bytes | None:
        async with self._conn() as conn:
            cur = await conn.execute(self._q["load_state"], (run_id, key, before_seq), prepare=True)
            row = await cur.fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    # -- retention and garbage collection -------------------------------------------------
    async def delete_finished_runs(self, older_than: float) -> int:
        async with self._conn() as conn:
            cur = await conn.execute(self._q["delete_finished_runs"], (older_than,))
            return cur.rowcount

    async def ref_payloads(self) -> list[bytes]:
        async with self._conn() as conn:
            cur = await conn.execute(self._q["ref_payloads"])
            return [bytes(row[0]) for row in await cur.fetchall()]

    async def blob_hashes(self, written_before: float) -> list[bytes]:
        async with self._conn() as conn:
            cur = await conn.execute(self._q["blob_hashes"], (written_before,))
            return [bytes(row[0]) for row in await cur.fetchall()]

    async def delete_blobs(self, hashes: Sequence[bytes], written_before: float) -> None:
        if not hashes:
            return
        async with self._conn() as conn:
            await conn.execute(self._q["delete_blobs"], (list(hashes), written_before))

    # -- blobs -----------------------------------------------------------------------------------
    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        if not rows:
            return
        async with self._conn() as conn, conn.cursor() as cur:
            await cur.executemany(self._q["put_usage"], [usage_params(r) for r in rows])

    async def load_usage(self, run_id: str) -> list[UsageTotal]:
        async with self._conn() as conn:
            cur = await conn.execute(self._q["load_usage"], (run_id,))
            return [UsageTotal(*row) for row in await cur.fetchall()]

    async def put_blobs(self, blobs: Mapping[bytes, bytes]) -> None:
        """Re-putting a stored blob refreshes its ``written_at``, so GC spares it."""
        if not blobs:
            return
        params = (time.time(), list(blobs), list(blobs.values()))
        async with self._conn() as conn:
            await conn.execute(self._q["put_blobs"], params)

    async def get_blobs(self, hashes: Sequence[bytes]) -> dict[bytes, bytes]:
        if not hashes:
            return {}
        async with self._conn() as conn:
            cur = await conn.execute(self._q["get_blobs"], (list(hashes),), prepare=True)
            return {bytes(h): bytes(d) for h, d in await cur.fetchall()}

    # -- events and cancellation ---------------------------------------------------------------
    async def send_event(
        self, run_id: str, name: str, payload: bytes, key: str | None, now: float
    ) -> bool:
        params = {
            "run_id": run_id,
            "name": name,
            "key": key,
            "payload": payload,
            "now": now,
            "token": self._token,
        }
        async with self._conn() as conn:
            cur = await conn.execute(self._q["send_event"], params, prepare=True)
            row = await cur.fetchone()
        if row is None or not row[0]:
            raise RunNotFound(f"no run with id {run_id!r}")
        return bool(row[1])

    async def take_event(self, run_id: str, epoch: int, name: str, entry: Entry) -> bytes | None:
        params = {
            "run_id": run_id,
            "epoch": epoch,
            "event": name,
            "e_seq": entry.seq,
            "e_kind": entry.kind,
            "e_name": entry.name,
            "e_digest": entry.digest,
            "e_status": entry.status,
            "e_attempt": entry.attempt,
            "e_started_at": entry.started_at,
            "e_finished_at": entry.finished_at,
        }
        rows = await self._fenced(self._q["take_event"], params, run_id, epoch)
        if not rows:
            return None
        payload = bytes(rows[0][0])
        entry.payload = payload
        return payload

    async def request_cancel(self, run_id: str, error: bytes, now: float) -> list[str]:
        flagged: list[str] = []
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(self._q["run_tree"], (run_id,))
            tree = await cur.fetchall()
            if not tree:
                raise RunNotFound(f"no run with id {run_id!r}")
            # Descendants before ancestors: the order finish_run locks a child and then its
            # parent in, so a cancel racing a child's finish cannot deadlock with it.
            for rid, status in reversed(tree):
                if status == RUNNING:
                    await conn.execute(self._q["flag_cancel"], (now, rid))
                    flagged.append(rid)
                elif status != CANCELLED:
                    cur = await conn.execute(self._q["cancel_idle"], (error, now, rid))
                    if await cur.fetchone() is not None:
                        await self._wake_parent(conn, rid, now)
            # Owners must learn of the flag, and handles of the runs that ended.
            await conn.execute(self._q["notify"], (self._token,))
        flagged.reverse()
        return flagged

    # -- change notification -----------------------------------------------------------------
    async def wait_for_change(self, timeout: float) -> bool:
        """Wait for a notification from another store (or a lifeline reconnect, after which
        anything may have changed). Never raises for a broken connection: the listener
        reconnects in the background and reports it as a change, so callers re-check."""
        if self._listener is None:
            raise StoreError("the store is not open: use `async with app:` first")
        if not self._changed.is_set():
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                return False
        self._changed.clear()
        return True


def _entry(row: Sequence[Any]) -> Entry:
    seq, kind, name, status, payload, digest, attempt, started_at, finished_at, deferred = row
    return Entry(
        seq, kind, name, status, payload, digest, attempt, started_at, finished_at, bool(deferred)
    )


def _entry_arrays(entries: Sequence[Entry]) -> dict[str, Any]:
    """``entries`` as one array per column (the ``e_*`` parameters of batch appends)."""
    return {
        "n": len(entries),
        "e_seq": [e.seq for e in entries],
        "e_kind": [e.kind for e in entries],
        "e_name": [e.name for e in entries],
        "e_digest": [e.digest for e in entries],
        "e_status": [e.status for e in entries],
        "e_attempt": [e.attempt for e in entries],
        "e_started_at": [float(e.started_at) for e in entries],
        "e_finished_at": [None if e.finished_at is None else float(e.finished_at) for e in entries],
        "e_payload": [e.payload for e in entries],
    }
