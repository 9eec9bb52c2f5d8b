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

import contextlib
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from ..errors import InvalidArgument, LeaseLost, RunNotFound, StoreError

try:  # before pg_session, which needs psycopg too
    import psycopg
    from psycopg import AsyncCursor
    from psycopg_pool import AsyncConnectionPool
except ImportError as _missing:  # pragma: no cover - depends on the installation
    raise StoreError(
        "PostgreSQL support needs psycopg 3: pip install 'undying[postgres]'"
    ) from _missing

from .base import (
    CANCELLED,
    CLOSE_STREAM,
    PUBLISH,
    RUNNING,
    Claim,
    Entry,
    EventRecord,
    QueueLimits,
    RunFilter,
    RunRecord,
    StreamAppend,
    StreamInfo,
    StreamPage,
    TransactionFnFailed,
    UsageRow,
    UsageTotal,
    child_event_name,
    fence_error,
    stream_page,
    stream_refusal,
    usage_params,
    wait_key,
)
from .migrations import Ledger, migrate
from .pg_runs import RUN_ROWS, PostgresRunsAndSchedules
from .pg_session import STREAM_NOTE, Conn, Sessions, records, redact, retried_once
from .sqlfiles import migrations, queries

DURABILITY = ("normal", "full")
#: payloads up to this size come with the journal metadata; larger ones load lazily
INLINE_PAYLOAD = 512
#: how long a worker found dead is trusted to stay dead without probing its lock again
DEAD_OWNER_TTL = 30.0
#: SQLSTATE raised by the schema's undying_fence() when a fenced write was refused
FENCE_SQLSTATE = "UD001"

Cursor = AsyncCursor[Any]
#: statements whose row counts decide whether a fenced write went through
Checks = list[tuple[Cursor, int]]
ENTRY_ROWS = records(Entry)
EVENT_ROWS = records(EventRecord)


class PostgresStore(PostgresRunsAndSchedules):
    """A store on one PostgreSQL database, shared by every worker.

    Every method that runs statements on the pool is ``retried_once``: a statement that
    meets a session the server had already ended (a restart, ``pg_terminate_backend``) is
    run again, once, on a fresh connection; its docstring says why that is safe."""

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
        self._q = queries("postgres")
        self.sessions = Sessions(url, pool_size, self._q)
        self._token = uuid.uuid4().hex
        self._dead: dict[str, float] = {}

    # -- lifecycle ----------------------------------------------------------------------------
    async def open(self, worker_id: str) -> None:
        await self.sessions.open(worker_id, self._token, self._migrate)

    async def close(self) -> None:
        await self.sessions.close()

    async def migrate(self) -> list[str]:
        conn = await self.sessions.connect()
        try:
            return await self._migrate(conn)
        finally:
            await conn.close()

    async def _migrate(self, conn: Conn) -> list[str]:
        return await migrate(_PostgresLedger(conn, self.url, self._q), migrations("postgres"))

    @property
    def pool(self) -> AsyncConnectionPool[Conn]:
        """The pool statements run on (tests take a connection of it to see its session)."""
        return self.sessions.pool

    def _conn(self) -> contextlib.AbstractAsyncContextManager[Conn]:
        return self.sessions.conn()

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
    @retried_once
    async def get_run(self, run_id: str) -> RunRecord | None:
        async with self._conn() as conn:
            cur = conn.cursor(row_factory=RUN_ROWS)
            await cur.execute(self._q["get_run"], (run_id,), prepare=True)
            return await cur.fetchone()

    @retried_once
    async def list_runs(self, flt: RunFilter) -> list[RunRecord]:
        async with self._conn() as conn:
            cur = conn.cursor(row_factory=RUN_ROWS)
            await cur.execute(self._q["list_runs"], asdict(flt))
            return await cur.fetchall()

    @retried_once
    async def count_runs_by_status(self, flt: RunFilter) -> dict[str, int]:
        async with self._conn() as conn:
            cur = await conn.execute(self._q["count_runs_by_status"], asdict(flt))
            return {status: int(count) for status, count in await cur.fetchall()}

    @retried_once
    async def list_workflows(self) -> list[str]:
        async with self._conn() as conn:
            cur = await conn.execute(self._q["list_workflows"])
            return [str(name) for (name,) in await cur.fetchall()]

    @retried_once
    async def list_events(self, run_id: str, limit: int = 1000) -> list[EventRecord]:
        async with self._conn() as conn:
            cur = conn.cursor(row_factory=EVENT_ROWS)
            await cur.execute(self._q["list_events"], (run_id, limit))
            return await cur.fetchall()

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

    @retried_once
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

    @retried_once
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

    @retried_once
    async def release_runs(self, owner: str, run_ids: Iterable[str], now: float) -> None:
        ids = list(run_ids)
        if not ids:
            return
        params = {"now": now, "run_ids": ids, "owner": owner, "token": self._token}
        async with self._conn() as conn:
            await conn.execute(self._q["release_runs"], params)

    @retried_once
    async def resume_run(self, run_id: str, now: float) -> bool:
        params = {"now": now, "run_id": run_id, "token": self._token}
        async with self._conn() as conn:
            cur = await conn.execute(self._q["resume_run"], params)
            return cur.rowcount == 1

    @retried_once
    async def set_status_value(self, run_id: str, epoch: int, value: bytes) -> None:
        async with self._conn() as conn:
            cur = await conn.execute(
                self._q["set_status_value"], (value, time.time(), run_id, epoch), prepare=True
            )
            if cur.rowcount != 1:
                raise await self._fence_failed(conn, run_id, epoch)

    @retried_once
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

    @retried_once
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
        shared = sorted({n for key, q in queues.items() if q.shared for n in (key, q.name)})
        async with self._conn() as conn, conn.transaction():
            if shared:
                # Held until commit, so counting a queue's runs and claiming from it is atomic
                # across workers, and the limits hold globally.
                await conn.execute(self._q["lock_queues"], (shared,))
            dead = await self._dead_owners(conn, owner)
            runs = conn.cursor(row_factory=RUN_ROWS)
            await runs.execute(
                self._q["take_over"], {**base, "dead": dead, "limit": limit}, prepare=True
            )
            taken = await runs.fetchall()
            claims += [Claim(r, takeover=True) for r in taken]
            limit -= len(taken)
            for name, limits in queues.items():
                allowed = min(
                    limit, await self._queue_room(conn, limits, running_per_queue.get(name, 0), now)
                )
                if allowed <= 0:
                    continue
                params = {**base, "queue": name, "limit": allowed}
                if limits.per_key_concurrency is None:
                    await runs.execute(self._q["claim_queue"], params, prepare=True)
                else:
                    params["per_key"] = limits.per_key_concurrency
                    await runs.execute(self._q["claim_queue_per_key"], params, prepare=True)
                taken = await runs.fetchall()
                if limits.rate_limit and taken:
                    await conn.execute(self._q["record_queue_starts"], (name, now, len(taken)))
                claims += [Claim(r) for r in taken]
                limit -= len(taken)
            if limit > 0:
                await runs.execute(self._q["claim_due"], {**base, "limit": limit}, prepare=True)
                claims += [Claim(r) for r in await runs.fetchall()]
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

    @retried_once
    async def heartbeat(
        self, owner: str, lease_expires: float, run_ids: Sequence[str]
    ) -> list[str]:
        async with self._conn() as conn:
            cur = await conn.execute(
                self._q["heartbeat"], (lease_expires, owner, list(run_ids)), prepare=True
            )
            return [row[0] for row in await cur.fetchall()]

    @retried_once
    async def cancel_requests(self, owner: str) -> list[str]:
        async with self._conn() as conn:
            cur = await conn.execute(self._q["cancelled_owned"], (owner,), prepare=True)
            return [row[0] for row in await cur.fetchall()]

    @retried_once
    async def next_wake_at(self) -> float | None:
        async with self._conn() as conn:
            cur = await conn.execute(self._q["next_wake_at"], prepare=True)
            row = await cur.fetchone()
        return row[0] if row else None

    # -- journal ---------------------------------------------------------------------------------
    @retried_once
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

    @retried_once
    async def load_journal_meta(self, run_id: str) -> list[Entry]:
        params = {"inline": INLINE_PAYLOAD, "run_id": run_id}
        async with self._conn() as conn:
            cur = conn.cursor(row_factory=ENTRY_ROWS)
            await cur.execute(self._q["load_journal_meta"], params, prepare=True)
            return await cur.fetchall()

    @retried_once
    async def load_payloads(self, run_id: str, seqs: Sequence[int]) -> dict[int, bytes]:
        if not seqs:
            return {}
        async with self._conn() as conn:
            cur = await conn.execute(self._q["load_payloads"], (run_id, list(seqs)), prepare=True)
            rows = await cur.fetchall()
        return {seq: payload for seq, payload in rows if payload is not None}

    @retried_once
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

    @retried_once
    async def load_state(self, run_id: str, key: str, before_seq: int) -> bytes | None:
        async with self._conn() as conn:
            cur = await conn.execute(self._q["load_state"], (run_id, key, before_seq), prepare=True)
            row = await cur.fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    # -- retention and garbage collection -------------------------------------------------
    @retried_once
    async def delete_finished_runs(self, older_than: float) -> int:
        async with self._conn() as conn:
            cur = await conn.execute(self._q["delete_finished_runs"], {"older_than": older_than})
            return cur.rowcount

    @retried_once
    async def ref_payloads(self) -> list[bytes]:
        async with self._conn() as conn:
            cur = await conn.execute(self._q["ref_payloads"])
            return [bytes(row[0]) for row in await cur.fetchall()]

    @retried_once
    async def blob_hashes(self, written_before: float) -> list[bytes]:
        async with self._conn() as conn:
            cur = await conn.execute(self._q["blob_hashes"], (written_before,))
            return [bytes(row[0]) for row in await cur.fetchall()]

    @retried_once
    async def delete_blobs(self, hashes: Sequence[bytes], written_before: float) -> None:
        if not hashes:
            return
        async with self._conn() as conn:
            await conn.execute(self._q["delete_blobs"], (list(hashes), written_before))

    # -- blobs -----------------------------------------------------------------------------------
    @retried_once
    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        if not rows:
            return
        async with self._conn() as conn, conn.cursor() as cur:
            await cur.executemany(self._q["put_usage"], [usage_params(r) for r in rows])

    @retried_once
    async def load_usage(self, run_id: str) -> list[UsageTotal]:
        async with self._conn() as conn, conn.cursor(row_factory=records(UsageTotal)) as cur:
            await cur.execute(self._q["load_usage"], (run_id,))
            return await cur.fetchall()

    @retried_once
    async def put_blobs(self, blobs: Mapping[bytes, bytes]) -> None:
        """Re-putting a stored blob refreshes its ``written_at``, so GC spares it."""
        if not blobs:
            return
        params = (time.time(), list(blobs), list(blobs.values()))
        async with self._conn() as conn:
            await conn.execute(self._q["put_blobs"], params)

    @retried_once
    async def get_blobs(self, hashes: Sequence[bytes]) -> dict[bytes, bytes]:
        if not hashes:
            return {}
        async with self._conn() as conn:
            cur = await conn.execute(self._q["get_blobs"], (list(hashes),), prepare=True)
            return {bytes(h): bytes(d) for h, d in await cur.fetchall()}

    # -- events and cancellation ---------------------------------------------------------------
    @retried_once
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

    @retried_once
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

    @retried_once
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

    # -- streams ---------------------------------------------------------------------------------
    @retried_once
    async def append_stream(
        self,
        run_id: str,
        epoch: int,
        append: StreamAppend,
        entries: Sequence[Entry],
        now: float,
    ) -> bool:
        params = {
            "run_id": run_id,
            "epoch": epoch,
            "stream": append.stream,
            "generation": append.generation,
            "seq": append.seq,
            "attempt": append.attempt,
            "first_idx": append.first_idx,
            "kind": CLOSE_STREAM if append.close else PUBLISH,
            "payloads": list(append.payloads),
            "count": len(append.payloads),
            "closed_at": now if append.close else None,
            "marker": append.marker,
            "now": now,
            "note": self._token + STREAM_NOTE,
        }
        [(at_epoch, status, done, appended, _, _)] = await self._fenced(
            self._q["append_stream"], params, run_id, epoch, entries
        )
        if done:
            return False
        if not appended:
            current = (epoch, status) if at_epoch else None
            if current is None:
                async with self._conn() as conn:
                    cur = await conn.execute(self._q["check_epoch"], (run_id,))
                    row = await cur.fetchone()
                current = None if row is None else (int(row[0]), "")
            raise stream_refusal(run_id, append.stream, epoch, current)
        return True

    @retried_once
    async def read_stream(self, run_id: str, stream: str, offset: int, limit: int) -> StreamPage:
        params = {"run_id": run_id, "stream": stream, "offset": offset, "limit": limit}
        async with self._conn() as conn:
            cur = await conn.execute(self._q["read_stream"], params, prepare=True)
            return stream_page(await cur.fetchall())

    @retried_once
    async def list_streams(self, run_id: str) -> list[StreamInfo]:
        async with self._conn() as conn, conn.cursor(row_factory=records(StreamInfo)) as cur:
            await cur.execute(self._q["list_streams"], (run_id,))
            return await cur.fetchall()

    @retried_once
    async def copy_streams(self, src_run_id: str, dst_run_id: str, before_seq: int) -> int:
        params = {"src": src_run_id, "dst": dst_run_id, "before": before_seq}
        async with self._conn() as conn:
            cur = await conn.execute(self._q["copy_streams"], params)
            row = await cur.fetchone()
        return 0 if row is None else int(row[0])

    # -- change notification -----------------------------------------------------------------
    async def wait_for_activity(self, timeout: float) -> bool:
        """Like ``wait_for_change``, stream appends made by other stores included."""
        return await self.sessions.wait_for_activity(timeout)

    async def wait_for_change(self, timeout: float) -> bool:
        """Wait for a notification from another store (or a lifeline reconnect, after which
        anything may have changed). Never raises for a broken connection: the listener
        reconnects in the background and reports it as a change, so callers re-check."""
        return await self.sessions.wait_for_change(timeout)


class _PostgresLedger(Ledger):
    """The PostgreSQL part of ``migrations.migrate``: every pending migration in one
    transaction (DDL is transactional here), under an advisory lock that makes workers
    starting together against an empty database wait for one another instead of racing."""

    def __init__(self, conn: Conn, url: str, q: Mapping[str, str]) -> None:
        self.conn, self.q = conn, q
        self.where = redact(url)
        self.remedy = (
            "restore the database from a backup, or correct the table by hand (each row "
            "is the version and file name of one migration in undying/store/sql/postgres)"
        )

    @contextlib.asynccontextmanager
    async def locked(self) -> AsyncIterator[None]:
        async with self.conn.transaction():
            await self.conn.execute(self.q["lock_migrations"])
            yield

    async def applied(self) -> list[tuple[Any, Any]]:
        await self.conn.execute(self.q["create_migrations_table"])
        cur = await self.conn.execute(self.q["applied_migrations"])
        return await cur.fetchall()

    async def apply(self, version: int, name: str, sql: str) -> bool:
        await self.conn.execute(sql)  # inside the transaction ``locked`` holds
        await self.conn.execute(self.q["record_migration"], (version, name, time.time()))
        return True


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
