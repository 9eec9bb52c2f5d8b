"""How a PostgreSQL store stays connected: its pool, its lifeline, a session the server ended,
rows mapped by name, and passwords kept out of messages.

Kept apart from the store so the store reads as what it stores, not how it stays connected.

The pool serves statements, in autocommit mode. The *lifeline* is one connection of the
store's own outside the pool: it holds a session advisory lock keyed by the worker id (which
PostgreSQL frees the moment the session ends, so other workers can tell a dead owner at once)
and ``LISTEN``s for changes, which ``wait_for_change`` reports. A stream append's notification
ends in ``STREAM_NOTE``: it is reported by ``wait_for_activity`` only, so that tokens streamed
by one run do not wake every worker's scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import select
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import psycopg
from psycopg import AsyncConnection, AsyncCursor
from psycopg.pq import TransactionStatus
from psycopg.rows import RowMaker, no_result
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..errors import StoreError
from .rows import record_maker

Conn = AsyncConnection[Any]
log = logging.getLogger("undying.store.postgres")
R = TypeVar("R")
T = TypeVar("T")
P = ParamSpec("P")

CONNECT_TIMEOUT = 10.0
#: how long one connection may stay the warm one before it goes back to the pool
WARM_SECONDS = 60.0
RECONNECT_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
#: TCP keepalives on the lifeline, so a silently dropped network is noticed within ~30 s
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}

#: A worker frozen inside ctx.transaction (SIGSTOP, GC pause) holds its run's row lock, which
#: keeps other workers from taking the run over; the server ends such a session after this
#: long idle in its transaction (which also frees its liveness lock, so the take-over is
#: immediate). fn's own statements are not idle time.
IDLE_IN_TRANSACTION_MS = 10_000
SESSION_OPTIONS = f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}"

#: SQLSTATEs of the FATAL a server sends when it ends a session of its own accord, between
#: or during statements: admin_shutdown (``pg_terminate_backend``, a fast shutdown or
#: restart), crash_shutdown (another backend crashed), idle_session_timeout.
SESSION_ENDED = frozenset({"57P01", "57P02", "57P05"})
#: the end of a stream append's notification payload (after the store's token)
STREAM_NOTE = ":stream"


class WorkerIdTaken(Exception):
    """Another live session holds this worker id's lock."""


class SessionEnded(psycopg.OperationalError):
    """A statement met a session the server had already ended, in the circumstances where
    it is retried (``retried_once``). Being an ``OperationalError``, it reads as the failure
    it stands for wherever it is not retried."""


def is_stale(conn: Conn) -> bool:
    """Whether the server has ended this idle connection, found without a round trip.

    An idle pooled connection receives nothing unless the server ended it (a restart, an
    admin's ``pg_terminate_backend``): then its socket turns readable (the goodbye message,
    then end of file). Not before the server process has acted on the signal, though: under
    load that can be after the checkout (see ``retried_once``).
    """
    if conn.closed or conn.broken:
        return True
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)


def redact(url: str) -> str:
    """The URL without its password, for error messages and logs."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def records(cls: type[R]) -> Callable[[AsyncCursor[Any]], RowMaker[R]]:
    """A psycopg row factory building ``cls`` records by column name (see ``rows``: the
    names are checked once per result; ``psycopg.rows.class_row`` would pass every row as
    keyword arguments, 3.5 times slower on a journal's entries)."""

    def factory(cursor: AsyncCursor[Any]) -> RowMaker[R]:
        description = cursor.description
        if description is None:
            return no_result
        return record_maker(cls, tuple(column.name for column in description))

    return factory


class Sessions:
    """The connections of one open store: the pool, the lifeline and its listener."""

    def __init__(self, url: str, pool_size: int, queries: Mapping[str, str]) -> None:
        self.url = url
        self._pool_size = pool_size
        self._q = queries
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._lifeline: Conn | None = None
        self._listener: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._activity = asyncio.Event()
        self._worker_id = ""
        self._token = ""
        self._closing = False
        #: the connection last handed back, kept out of the pool (see ``conn``)
        self._warm: Conn | None = None
        #: when each connection out of the pool left it (by id; kept warm for a while only)
        self._taken_at: dict[int, float] = {}

    async def connect(self, **extra: Any) -> Conn:
        """A connection of its own (autocommit), or a StoreError saying why there is none."""
        try:
            return await AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT), **extra
            )
        except psycopg.OperationalError as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {redact(self.url)}: {exc}") from exc

    async def open(
        self, worker_id: str, token: str, prepare: Callable[[Conn], Awaitable[object]]
    ) -> None:
        """Connect the lifeline, run ``prepare`` on it (the migrations), fill the pool and
        start listening. ``token`` marks this store's own notifications, which are ignored."""
        self._worker_id, self._token = worker_id, token
        self._closing = False
        self._changed = asyncio.Event()
        self._activity = asyncio.Event()
        try:
            # The lifeline first: a direct connection fails fast with the server's own
            # message (the pool would retry until its timeout).
            try:
                self._lifeline = await self._connect_lifeline()
            except WorkerIdTaken as exc:
                raise StoreError(
                    f"worker id {worker_id!r} is already held by a live session; "
                    "each worker needs its own id"
                ) from exc
            await prepare(self._lifeline)
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
            warm, self._warm = self._warm, None
            if warm is not None:
                await self._checkin(warm)
            await self._pool.close()
            self._pool = None

    async def _connect_lifeline(self) -> Conn:
        conn = await self.connect(**KEEPALIVES)
        try:
            cur = await conn.execute(self._q["lock_worker"], (self._worker_id,))
            row = await cur.fetchone()
            if row is None or not row[0]:
                raise WorkerIdTaken(f"worker id {self._worker_id!r} is locked by another session")
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
                    self._activity.set()
                failures = 0
                own = (self._token, self._token + STREAM_NOTE)
                async with contextlib.aclosing(self._lifeline.notifies()) as notes:
                    async for note in notes:
                        if note.payload in own:
                            continue
                        if not note.payload.endswith(STREAM_NOTE):
                            self._changed.set()
                        self._activity.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._changed.set()
                self._activity.set()
                if self._lifeline is not None:
                    with contextlib.suppress(Exception):
                        await self._lifeline.close()
                    self._lifeline = None
                delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
                failures += 1
                log.warning("lifeline to PostgreSQL lost (%s); reconnecting in %.2f s", exc, delay)
                await asyncio.sleep(delay)

    async def wait_for_change(self, timeout: float) -> bool:
        """See ``PostgresStore.wait_for_change``."""
        return await self._wait(self._changed, timeout)

    async def wait_for_activity(self, timeout: float) -> bool:
        """See ``PostgresStore.wait_for_activity``."""
        return await self._wait(self._activity, timeout)

    async def _wait(self, flag: asyncio.Event, timeout: float) -> bool:
        if self._listener is None:
            raise StoreError("the store is not open: use `async with app:` first")
        if not flag.is_set():
            try:
                await asyncio.wait_for(flag.wait(), timeout)
            except TimeoutError:
                return False
        flag.clear()
        return True

    @property
    def pool(self) -> AsyncConnectionPool[Conn]:
        if self._pool is None:
            raise StoreError("the store is not open: use `async with app:` first")
        return self._pool

    @contextlib.asynccontextmanager
    async def conn(self) -> AsyncIterator[Conn]:
        """A pooled connection the server has not visibly ended.

        After a PostgreSQL restart every pooled connection is dead. A ping on each checkout
        would cost a round trip per write, and the pool's own ``check`` sleeps (backoff)
        after each failure; instead a dead connection is spotted for free (``is_stale``),
        closed, and handed back, which makes the pool open a replacement, and the next one
        is taken at once. A statement that meets a session ended too recently to be seen
        raises ``SessionEnded`` (see ``retried_once``).

        The connection last handed back is kept aside (``_warm``) and handed out first,
        last in first out, instead of going back to the pool, which hands out its idle
        connections in turn: one step after another then runs on one server process that
        is already running, instead of waking each of the pool's processes in turn (on a
        machine with few cores that costs ~80 us per statement; bench/postgres.py).
        """
        conn = self._warm
        if conn is not None:
            self._warm = None
        else:
            conn = await self._checkout()
        for _ in range(self._pool_size):
            if not is_stale(conn):
                break
            await self._discard(conn)
            conn = await self._checkout()
        try:
            yield conn
        except psycopg.OperationalError as exc:
            if conn.broken and exc.sqlstate in SESSION_ENDED:
                raise SessionEnded(str(exc)) from exc
            raise
        finally:
            await self._give_back(conn)

    async def _checkout(self) -> Conn:
        conn = await self.pool.getconn()
        self._taken_at[id(conn)] = asyncio.get_running_loop().time()
        return conn

    async def _checkin(self, conn: Conn) -> None:
        """Return ``conn`` to the pool (which resets it), or close it if the pool is gone."""
        self._taken_at.pop(id(conn), None)
        pool = self._pool
        if pool is None:  # the store closed while the connection was out
            with contextlib.suppress(Exception):
                await conn.close()
            return
        await pool.putconn(conn)

    async def _give_back(self, conn: Conn) -> None:
        """Keep ``conn`` as the warm connection if it is idle, none is kept yet, and it left
        the pool less than ``WARM_SECONDS`` ago (then the pool's own upkeep, such as
        replacing old connections, sees it again); else return it to the pool."""
        taken = self._taken_at.get(id(conn))
        if (
            self._warm is None
            and not self._closing
            and taken is not None
            and not conn.broken
            and conn.info.transaction_status == TransactionStatus.IDLE
            and asyncio.get_running_loop().time() - taken < WARM_SECONDS
        ):
            self._warm = conn
            return
        await self._checkin(conn)

    async def _discard(self, conn: Conn) -> None:
        """Close a connection the server ended and hand it back: the pool replaces it."""
        with contextlib.suppress(Exception):
            await conn.close()
        await self._checkin(conn)

    async def replace_ended(self) -> None:
        """After a session the server ended: test every idle pooled connection now (one
        round trip each), since whatever ended one (a restart, a mass termination) has
        likely ended them all, and replace the dead ones, so a retry gets a live session.
        The warm connection goes back first, to be tested with them."""
        warm, self._warm = self._warm, None
        if warm is not None:
            await self._checkin(warm)
        await self.pool.check()


class HasSessions(Protocol):
    @property
    def sessions(self) -> Sessions: ...


S = TypeVar("S", bound=HasSessions)


def retried_once(
    method: Callable[Concatenate[S, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """Run a store method again, once, on a fresh connection, when its statement met a session
    the server had already ended (``SessionEnded``).

    Why the race exists: a pooled connection looks alive at checkout (``is_stale``) until
    its server process has acted on the termination signal, which under load can be after
    the statement was sent; that statement then meets the FATAL.

    Why the retry is safe. It happens only when all of these hold:

    * the error arrived before any result: statements run on client-side cursors, which
      receive the whole result before ``execute`` returns, so a connection error is raised
      by ``execute`` (or by a ``COMMIT``) itself, and the method has handed nothing back;
    * the server ended the session (a FATAL with a ``SESSION_ENDED`` SQLSTATE), and the
      connection is now broken, so the failed attempt can do nothing more;
    * the method's statements are single autocommit statements or transactions of the
      store's own (never ``ctx.transaction``: its ``fn`` is the user's, and the engine
      retries it). The failed one had not committed: a server ends a session where it
      checks for interrupts, while it waits for a command or runs one, and the FATAL rolls
      back the session's open transaction; a commit holds interrupts off, and once it is
      done the server reports success (ReadyForQuery) before it next waits for a command,
      so a session ended after a commit fails none of that commit's statements (the next
      checkout finds the socket readable instead). Statements earlier in the same method
      either wrote nothing or do the same again (an insert that conflicted, a read, an
      epoch check).

    And were a write nevertheless applied twice, the schema's rules make the second a
    no-op or a refusal, never a second effect: a fenced journal append re-writes an open
    entry (intent, armed) with the same values, or finds its own completed entry, which
    ``ON CONFLICT ... WHERE status IN ('intent', 'waiting')`` never rewrites, and is
    refused (``LeaseLost``; replay then returns that entry); a batch, ``finish_run`` or
    ``suspend_run`` with entries is refused as a whole by ``undying_fence``; ``take_event``
    cannot consume a second event for a position already journaled (refused the same way);
    run updates (finish without entries, status value, heartbeat, release, resume, cancel)
    set the same values again; a claim finds what it took running under a live lease, not
    due; ``create_run`` and keyed events are ``ON CONFLICT DO
    NOTHING``; blobs are content-addressed; ``copy_journal`` fails on its primary key. Only
    an event sent without a key has no such second line: it relies on the first.
    """

    @functools.wraps(method)
    async def once_more(store: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(store, *args, **kwargs)
        except SessionEnded as exc:
            log.info("PostgreSQL had ended the session (%s); retrying once", exc.__cause__)
        await store.sessions.replace_ended()
        try:
            return await method(store, *args, **kwargs)
        except SessionEnded as exc:  # ended again: report the server's own error
            raise exc.__cause__ or exc from None

    return once_more
