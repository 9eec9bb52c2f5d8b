"""The embedded SQLite store: zero infrastructure, several processes may share one file.

Every call runs on the event-loop thread. That is deliberate: a thread hop costs several
times a WAL commit, so hopping would make the floor of per-step overhead the hop, not the
database. Writes are single short statements in autocommit mode (one statement, one
transaction) or short ``BEGIN IMMEDIATE`` transactions when several rows must commit together.

Liveness: each worker holds an exclusive ``flock`` on its own file in ``<db>.locks/``. The
kernel drops it the instant the process dies, so another worker can tell a dead owner from a
slow one at once, without waiting for the lease to expire. The lease epoch still fences an
owner that was only paused.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from typing import Any, TypeVar

from ..errors import InvalidArgument, LeaseLost, RunNotFound, StoreError
from .base import (
    CANCELLED,
    CLOSE_STREAM,
    PUBLISH,
    RETRY,
    RUNNING,
    VALUE,
    Claim,
    Entry,
    EventRecord,
    NewRun,
    QueueLimits,
    RunFilter,
    RunRecord,
    ScheduleRecord,
    Store,
    StreamAppend,
    StreamInfo,
    StreamPage,
    TransactionFnFailed,
    UsageRow,
    UsageTotal,
    created_record,
    fence_error,
    schedule_params,
    stream_page,
    stream_refusal,
    tick_params,
    usage_params,
    wait_key,
)
from .migrations import Ledger, migrate
from .rows import record_maker
from .sqlfiles import migrations, queries
from .sqlite_file import RECOVER, check_writable, enable_wal, open_error

DURABILITY = {"normal": "NORMAL", "full": "FULL"}
#: how long one statement waits for another process's write lock before it fails (and the
#: runtime's retry, with backoff, takes over)
BUSY_TIMEOUT = 10.0
#: how often a waiting process checks whether another one committed (PRAGMA data_version is
#: a cheap in-memory read); bounds cross-process wake-up latency, costs ~2% CPU when idle
_CHANGE_POLL = 0.01
#: payloads up to this size come with the journal metadata; larger ones load lazily
INLINE_PAYLOAD = 512
#: SQLite gained unhex() in 3.41; queries.sql uses it, so older libraries get it from Python
_HAS_UNHEX = sqlite3.sqlite_version_info >= (3, 41)
R = TypeVar("R")


def _records(cur: sqlite3.Cursor, cls: type[R]) -> Iterator[R]:
    """The rows of ``cur`` as ``cls`` records, mapped by column name (see ``rows``)."""
    make = record_maker(cls, tuple(d[0] for d in cur.description), True)
    return map(make, cur)


def _hex_list(values: Iterable[bytes]) -> str:
    """Byte strings as the JSON array of hex strings queries.sql reads with json_each."""
    return json.dumps([v.hex() for v in values])


class SQLiteStore(Store):
    """A store on one SQLite file in WAL mode."""

    def __init__(
        self, path: str, *, durability: str = "normal", busy_timeout: float = BUSY_TIMEOUT
    ) -> None:
        if durability not in DURABILITY:
            raise InvalidArgument(
                f"durability must be one of {sorted(DURABILITY)}, not {durability!r}: 'normal' "
                "survives a process or container crash, 'full' also survives power loss"
            )
        if not isinstance(busy_timeout, int | float) or not busy_timeout >= 0:
            raise InvalidArgument(f"busy_timeout must be >= 0 seconds, not {busy_timeout!r}")
        self.busy_timeout = float(busy_timeout)
        self.path = path
        self.url = f"sqlite:///{path}"
        self.durability = durability
        self._sync = DURABILITY[durability]
        self._db: sqlite3.Connection | None = None
        self._q = queries("sqlite")
        self._lock_dir = path + ".locks"
        self._lock_fd: int | None = None
        self._dead: set[str] = set()
        self._data_version = 0
        self._activity_version = 0

    # -- lifecycle ----------------------------------------------------------------------------
    async def open(self, worker_id: str) -> None:
        await self.connect()
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(self._lock_dir)
            fd = os.open(os.path.join(self._lock_dir, worker_id), os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as exc:
            await self.close()
            raise open_error(self._lock_dir, exc, self.busy_timeout) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            await self.close()
            raise StoreError(
                f"worker id {worker_id!r} is already in use on {self.path!r}; "
                "each App needs its own"
            ) from None
        self._lock_fd = fd
        self._worker_id = worker_id

    async def connect(self) -> sqlite3.Connection:
        """Open the connection and bring the schema up to date (also used by ``migrate``).

        A file undying cannot use (missing directory, read-only file or directory, not a
        database, damaged, locked, full disk) ends here as one StoreError saying what is
        wrong and what to do (see ``sqlite_file``), never as a raw sqlite3 error."""
        if self._db is not None:
            return self._db
        check_writable(self.path)
        try:
            db = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self.busy_timeout,
            )
        except sqlite3.Error as exc:
            raise open_error(self.path, exc, self.busy_timeout) from exc
        try:
            enable_wal(db, self.busy_timeout)
            db.execute(f"PRAGMA synchronous={self._sync}")
            db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            db.execute("PRAGMA foreign_keys=OFF")
            if not _HAS_UNHEX:
                db.create_function("unhex", 1, bytes.fromhex, deterministic=True)
            self._db = db
            self._applied = await migrate(_SQLiteLedger(self), migrations("sqlite"))
            self._data_version = db.execute("PRAGMA data_version").fetchone()[0]
            self._activity_version = self._data_version
        except BaseException as exc:
            self._db = None
            db.close()
            if isinstance(exc, sqlite3.Error):
                raise open_error(self.path, exc, self.busy_timeout) from exc
            raise
        return db

    async def migrate(self) -> list[str]:
        self._applied = []
        await self.connect()
        applied = self._applied
        await self.close()
        return applied

    async def close(self) -> None:
        db, self._db = self._db, None
        try:
            if db is not None:
                db.close()  # the last connection out checkpoints the WAL into the file
        except sqlite3.Error as exc:
            raise open_error(self.path, exc, self.busy_timeout) from exc
        finally:
            if self._lock_fd is not None:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self._lock_dir, self._worker_id))
                os.close(self._lock_fd)
                self._lock_fd = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the store is not open: use `async with app:` first")
        return self._db

    @contextlib.contextmanager
    def _tx(self, *, durable: bool = False) -> Any:
        db = self.db
        if durable and self._sync != "FULL":
            db.execute("PRAGMA synchronous=FULL")
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            if durable and self._sync != "FULL":
                db.execute(f"PRAGMA synchronous={self._sync}")

    def _fence_failed(self, run_id: str, epoch: int) -> LeaseLost:
        row = self.db.execute(self._q["check_epoch"], (run_id,)).fetchone()
        return fence_error(run_id, epoch, None if row is None else int(row[0]))

    # -- runs -----------------------------------------------------------------------------------
    async def create_run(
        self, run: NewRun, *, owner: str | None, lease_expires: float, now: float
    ) -> tuple[bool, RunRecord]:
        if run.dedup_key is None:
            created = self._insert_run(self.db, run, owner, lease_expires, now)
        else:
            with self._tx() as db:
                holder = db.execute(
                    self._q["dedup_holder"], (run.workflow, run.dedup_key, now)
                ).fetchone()
                if holder is not None:
                    found = await self.get_run(holder[0])
                    assert found is not None, "a run holding a dedup key is never deleted alone"
                    return False, found
                created = self._insert_run(db, run, owner, lease_expires, now)
                db.execute(
                    self._q["hold_dedup_key"],
                    (run.workflow, run.dedup_key, run.run_id, run.dedup_until),
                )
        if created is not None:
            return True, created
        existing = await self.get_run(run.run_id)
        assert existing is not None
        return False, existing

    def _insert_run(
        self,
        db: sqlite3.Connection,
        run: NewRun,
        owner: str | None,
        lease_expires: float,
        now: float,
    ) -> RunRecord | None:
        """Insert ``run`` unless its id exists; the record if it was created."""
        record = created_record(run, owner, lease_expires, now)
        cur = db.execute(
            self._q["insert_run"],
            (
                run.run_id,
                run.workflow,
                record.status,
                run.input,
                owner,
                record.lease_expires,
                record.epoch,
                run.parent_id,
                run.queue,
                run.priority,
                run.deadline,
                now,
                now,
                run.concurrency_key,
            ),
        )
        return record if cur.rowcount == 1 else None

    async def get_run(self, run_id: str) -> RunRecord | None:
        return next(_records(self.db.execute(self._q["get_run"], (run_id,)), RunRecord), None)

    async def list_runs(self, flt: RunFilter) -> list[RunRecord]:
        return list(_records(self.db.execute(self._q["list_runs"], asdict(flt)), RunRecord))

    async def count_runs_by_status(self, flt: RunFilter) -> dict[str, int]:
        rows = self.db.execute(self._q["count_runs_by_status"], asdict(flt))
        return {status: count for status, count in rows}

    async def list_workflows(self) -> list[str]:
        return [name for (name,) in self.db.execute(self._q["list_workflows"])]

    async def list_events(self, run_id: str, limit: int = 1000) -> list[EventRecord]:
        return list(_records(self.db.execute(self._q["list_events"], (run_id, limit)), EventRecord))

    def _write_pending(
        self, db: sqlite3.Connection, run_id: str, epoch: int, pending: Sequence[Entry]
    ) -> None:
        sql = self._q["append_entry"]
        for entry in pending:
            if db.execute(sql, (*entry.as_row(run_id), run_id, epoch)).rowcount != 1:
                raise self._fence_failed(run_id, epoch)

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
        params = (status, output, error, now, run_id, epoch)
        if not pending:  # one statement; the parent is told by a trigger (004_child_wakeup)
            if self.db.execute(self._q["finish_run"], params).rowcount != 1:
                raise self._fence_failed(run_id, epoch)
            return
        with self._tx() as db:
            self._write_pending(db, run_id, epoch, pending)
            if db.execute(self._q["finish_run"], params).rowcount != 1:
                raise self._fence_failed(run_id, epoch)

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
        key = wait_key(wait_events)
        with self._tx() as db:
            self._write_pending(db, run_id, epoch, pending)
            cur = db.execute(self._q["suspend_run"], (key, key, wake_at, now, run_id, epoch))
            if cur.rowcount != 1:
                raise self._fence_failed(run_id, epoch)

    async def release_runs(self, owner: str, run_ids: Iterable[str], now: float) -> None:
        with self._tx() as db:
            for run_id in run_ids:
                db.execute(self._q["release_run"], (now, run_id, owner))

    async def resume_run(self, run_id: str, now: float) -> bool:
        cur = self.db.execute(self._q["resume_run"], (now, run_id))
        return cur.rowcount == 1

    async def set_status_value(self, run_id: str, epoch: int, value: bytes) -> None:
        cur = self.db.execute(self._q["set_status_value"], (value, time.time(), run_id, epoch))
        if cur.rowcount != 1:
            raise self._fence_failed(run_id, epoch)

    async def continue_as_new(self, run_id: str, epoch: int, new_input: bytes, now: float) -> None:
        with self._tx() as db:
            if db.execute(self._q["archive_generation"], (now, run_id, epoch)).rowcount != 1:
                raise self._fence_failed(run_id, epoch)
            db.execute(self._q["clear_journal"], (run_id,))
            db.execute(self._q["next_generation"], (new_input, now, run_id, epoch))

    # -- claiming and leases ------------------------------------------------------------------
    def _dead_owners(self, me: str) -> list[str]:
        """Owners of running runs whose lock file is free: their process is gone."""
        dead: list[str] = []
        for (owner,) in self.db.execute(self._q["running_owners"], (me,)).fetchall():
            if owner in self._dead or not _owner_alive(os.path.join(self._lock_dir, owner)):
                self._dead.add(owner)
                dead.append(owner)
        return dead

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
        with self._tx() as db:
            dead = self._dead_owners(owner)
            cur = db.execute(
                self._q["take_over"], (owner, lease_expires, now, now, json.dumps(dead), limit)
            )
            runs = list(_records(cur, RunRecord))
            claims += [Claim(r, takeover=True) for r in runs]
            limit -= len(runs)
            for name, limits in queues.items():
                allowed = self._queue_room(db, limits, running_per_queue.get(name, 0), now)
                allowed = min(allowed, limit)
                if allowed <= 0:
                    continue
                if limits.per_key_concurrency is None:
                    cur = db.execute(
                        self._q["claim_queue"], (owner, lease_expires, now, name, now, allowed)
                    )
                else:
                    cur = db.execute(
                        self._q["claim_queue_per_key"],
                        {
                            "owner": owner,
                            "lease_expires": lease_expires,
                            "now": now,
                            "queue": name,
                            "per_key": limits.per_key_concurrency,
                            "limit": allowed,
                        },
                    )
                runs = list(_records(cur, RunRecord))
                if limits.rate_limit:
                    db.executemany(self._q["record_queue_start"], [(name, now)] * len(runs))
                claims += [Claim(r) for r in runs]
                limit -= len(runs)
            if limit > 0:
                cur = db.execute(self._q["claim_due"], (owner, lease_expires, now, now, limit))
                claims += [Claim(r) for r in _records(cur, RunRecord)]
        return claims

    def _queue_room(
        self, db: sqlite3.Connection, limits: QueueLimits, mine: int, now: float
    ) -> int:
        room = 1 << 30
        if limits.worker_concurrency is not None:
            room = min(room, limits.worker_concurrency - mine)
        if limits.concurrency is not None:
            running = db.execute(self._q["count_queue_running"], (limits.name,)).fetchone()[0]
            room = min(room, limits.concurrency - running)
        if limits.rate_limit is not None:
            count, per = limits.rate_limit
            db.execute(self._q["prune_queue_starts"], (limits.name, now - per))
            started = db.execute(
                self._q["count_queue_started_since"], (limits.name, now - per)
            ).fetchone()[0]
            room = min(room, count - started)
        return room

    async def heartbeat(
        self, owner: str, lease_expires: float, run_ids: Sequence[str]
    ) -> list[str]:
        db = self.db
        db.execute(self._q["heartbeat"], (lease_expires, owner, json.dumps(list(run_ids))))
        return [r[0] for r in db.execute(self._q["cancelled_owned"], (owner,))]

    async def cancel_requests(self, owner: str) -> list[str]:
        return [r[0] for r in self.db.execute(self._q["cancelled_owned"], (owner,))]

    async def next_wake_at(self) -> float | None:
        row = self.db.execute(self._q["next_wake_at"]).fetchone()
        return row[0] if row else None

    # -- journal ---------------------------------------------------------------------------------
    async def write_entries(
        self, run_id: str, epoch: int, entries: Sequence[Entry], *, durable: bool = False
    ) -> None:
        if len(entries) == 1 and not durable:
            # The hot path: one statement in autocommit mode is one transaction.
            cur = self.db.execute(
                self._q["append_entry"], (*entries[0].as_row(run_id), run_id, epoch)
            )
            if cur.rowcount != 1:
                raise self._fence_failed(run_id, epoch)
            return
        with self._tx(durable=durable) as db:
            self._write_pending(db, run_id, epoch, entries)

    async def load_journal_meta(self, run_id: str) -> list[Entry]:
        cur = self.db.execute(self._q["load_journal_meta"], (INLINE_PAYLOAD, run_id))
        return list(_records(cur, Entry))

    async def load_payloads(self, run_id: str, seqs: Sequence[int]) -> dict[int, bytes]:
        if not seqs:
            return {}
        wanted = set(seqs)
        rows = self.db.execute(self._q["load_payloads"], (run_id, min(wanted), max(wanted)))
        return {seq: data for seq, data in rows if seq in wanted and data is not None}

    async def fork_run(self, run: NewRun, src_run_id: str, before_seq: int, now: float) -> bool:
        with self._tx() as db:
            if self._insert_run(db, run, None, now, now) is None:
                return False
            db.execute(self._q["copy_journal"], (run.run_id, src_run_id, before_seq))
            params = {"src": src_run_id, "dst": run.run_id, "before": before_seq}
            db.execute(self._q["copy_stream_items"], params)
            db.execute(self._q["copy_stream_heads"], {"dst": run.run_id})
        return True

    async def copy_journal(self, src_run_id: str, dst_run_id: str, before_seq: int) -> int:
        with self._tx() as db:
            cur = db.execute(self._q["copy_journal"], (dst_run_id, src_run_id, before_seq))
            return int(cur.rowcount)

    async def run_transaction(
        self,
        run_id: str,
        epoch: int,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        make_entries: Callable[[Any], Sequence[Entry]],
    ) -> Any:
        if asyncio.iscoroutinefunction(fn):
            raise InvalidArgument(
                "on SQLite, ctx.transaction needs a plain (sync) function fn(connection, ...): "
                "the journal's connection is synchronous"
            )
        with self._tx() as db:
            try:
                result = fn(db, *args)
            except Exception as exc:
                raise TransactionFnFailed(exc) from exc
            self._write_pending(db, run_id, epoch, make_entries(result))
        return result

    async def load_state(self, run_id: str, key: str, before_seq: int) -> bytes | None:
        row = self.db.execute(self._q["load_state"], (run_id, key, before_seq)).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    # -- retention and garbage collection -------------------------------------------------
    async def delete_finished_runs(self, older_than: float) -> int:
        with self._tx() as db:
            rows = db.execute(self._q["finished_run_trees"], (older_than,)).fetchall()
            if not rows:
                db.execute(self._q["delete_dedup_keys"], ("[]", older_than))
                return 0
            ids = json.dumps([run_id for (run_id,) in rows])
            for below in (
                "delete_journals",
                "delete_events",
                "delete_lineage",
                "delete_usage",
                "delete_stream_items",
                "delete_stream_heads",
            ):
                db.execute(self._q[below], (ids,))
            db.execute(self._q["delete_dedup_keys"], (ids, older_than))
            return int(db.execute(self._q["delete_runs"], (ids,)).rowcount)

    async def ref_payloads(self) -> list[bytes]:
        return [bytes(r[0]) for r in self.db.execute(self._q["ref_payloads"])]

    async def blob_hashes(self, written_before: float) -> list[bytes]:
        rows = self.db.execute(self._q["blob_hashes"], (written_before,))
        return [bytes(r[0]) for r in rows]

    async def delete_blobs(self, hashes: Sequence[bytes], written_before: float) -> None:
        if hashes:
            self.db.execute(self._q["delete_blobs"], (_hex_list(hashes), written_before))

    # -- token usage -------------------------------------------------------------------------------
    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        if rows:
            with self._tx() as db:
                db.executemany(self._q["put_usage"], [usage_params(r) for r in rows])

    async def load_usage(self, run_id: str) -> list[UsageTotal]:
        return list(_records(self.db.execute(self._q["load_usage"], (run_id,)), UsageTotal))

    # -- schedules -------------------------------------------------------------------------------
    async def list_schedules(self) -> list[ScheduleRecord]:
        return list(_records(self.db.execute(self._q["list_schedules"]), ScheduleRecord))

    async def register_schedules(
        self, schedules: Sequence[ScheduleRecord], now: float
    ) -> list[ScheduleRecord]:
        with self._tx() as db:
            db.executemany(
                self._q["register_schedule"], [schedule_params(s, now) for s in schedules]
            )
        names = {s.name for s in schedules}
        return [s for s in await self.list_schedules() if s.name in names]

    async def fire_tick(
        self,
        name: str,
        tick: float,
        run: NewRun,
        *,
        owner: str | None,
        lease_expires: float,
        now: float,
    ) -> RunRecord | None:
        params = tick_params(name, tick, run, owner, lease_expires, now)
        with self._tx() as db:
            created = db.execute(self._q["insert_tick_run"], params).rowcount == 1
            db.execute(self._q["mark_tick"], params)
        return created_record(run, owner, lease_expires, now) if created else None

    async def set_schedule_paused(self, name: str, paused: bool, now: float) -> bool | None:
        db = self.db
        params = {"name": name, "paused": int(paused), "now": now}
        if db.execute(self._q["pause_schedule"], params).rowcount == 1:
            return True
        return False if db.execute(self._q["schedule_exists"], (name,)).fetchone() else None

    # -- blobs -----------------------------------------------------------------------------------
    async def put_blobs(self, blobs: Mapping[bytes, bytes]) -> None:
        if blobs:
            with self._tx() as db:
                now = time.time()
                db.executemany(self._q["put_blob"], [(h, d, now) for h, d in blobs.items()])

    async def get_blobs(self, hashes: Sequence[bytes]) -> dict[bytes, bytes]:
        if not hashes:
            return {}
        return dict(self.db.execute(self._q["get_blobs"], (_hex_list(hashes),)))

    # -- events and cancellation ---------------------------------------------------------------
    async def send_event(
        self, run_id: str, name: str, payload: bytes, key: str | None, now: float
    ) -> bool:
        with self._tx() as db:
            if db.execute(self._q["check_epoch"], (run_id,)).fetchone() is None:
                raise RunNotFound(f"no run with id {run_id!r}")
            cur = db.execute(self._q["insert_event"], (run_id, name, key, payload, now))
            if cur.rowcount == 0:
                return False
            db.execute(self._q["wake_parent"], (now, run_id, name))
        return True

    async def take_event(self, run_id: str, epoch: int, name: str, entry: Entry) -> bytes | None:
        with self._tx() as db:
            row = db.execute(self._q["take_event"], (run_id, name)).fetchone()
            if row is None:
                return None
            event_id, payload = row
            entry.payload = payload
            self._write_pending(db, run_id, epoch, [entry])
            db.execute(self._q["consume_event"], (entry.seq, event_id))
        return bytes(payload)

    async def request_cancel(self, run_id: str, error: bytes, now: float) -> list[str]:
        flagged: list[str] = []
        with self._tx() as db:
            tree = db.execute(self._q["run_tree"], (run_id,)).fetchall()
            if not tree:
                raise RunNotFound(f"no run with id {run_id!r}")
            for rid, status in tree:
                if status == RUNNING:
                    db.execute(self._q["flag_cancel"], (now, rid))
                    flagged.append(rid)
                elif status != CANCELLED:  # the parent is told by a trigger
                    db.execute(self._q["cancel_idle"], (error, now, rid))
        return flagged

    # -- streams ---------------------------------------------------------------------------------
    async def append_stream(
        self,
        run_id: str,
        epoch: int,
        append: StreamAppend,
        entries: Sequence[Entry],
        now: float,
    ) -> bool:
        q, name = self._q, append.stream
        keys = {
            "run_id": run_id,
            "stream": name,
            "generation": append.generation,
            "seq": append.seq,
            "epoch": epoch,
            "attempt": append.attempt,
        }
        origin = tuple(keys.values())
        with self._tx() as db:
            if append.attempt:
                done = db.execute(q["stream_origin_written"], (*origin, append.first_idx))
            else:
                kind = CLOSE_STREAM if append.close else PUBLISH
                done = db.execute(q["stream_entry_written"], (run_id, append.seq, kind, name))
            if done.fetchone() is not None:
                return False
            current = db.execute(q["stream_run"], (run_id,)).fetchone()
            if current is None or tuple(current) != (epoch, RUNNING):
                raise stream_refusal(run_id, name, epoch, current)
            discarded = 0
            if append.marker is not None:
                discarded = db.execute(q["stream_discarded"], keys).fetchone()[0]
            taken = len(append.payloads) + (1 if discarded else 0)
            closed_at = now if append.close else None
            head = db.execute(
                q["reserve_stream"],
                {**keys, "length": taken, "closed_at": closed_at, "now": now},
            ).fetchone()
            if head is None:
                raise stream_refusal(run_id, name, epoch, (epoch, RUNNING))
            offset = head[0] - taken
            rows: list[tuple[Any, ...]] = []
            if discarded:
                marker = (*origin[:2], offset, RETRY, *origin[2:], -1, discarded, append.marker)
                rows.append((*marker, now))
                offset += 1
            rows += [
                (*origin[:2], offset + i, VALUE, *origin[2:], append.first_idx + i, 0, value, now)
                for i, value in enumerate(append.payloads)
            ]
            db.executemany(q["insert_stream_item"], rows)
            self._write_pending(db, run_id, epoch, entries)
        return True

    async def read_stream(self, run_id: str, stream: str, offset: int, limit: int) -> StreamPage:
        params = {"run_id": run_id, "stream": stream, "offset": offset, "limit": limit}
        return stream_page(self.db.execute(self._q["read_stream"], params).fetchall())

    async def list_streams(self, run_id: str) -> list[StreamInfo]:
        return list(_records(self.db.execute(self._q["list_streams"], (run_id,)), StreamInfo))

    async def copy_streams(self, src_run_id: str, dst_run_id: str, before_seq: int) -> int:
        params = {"src": src_run_id, "dst": dst_run_id, "before": before_seq}
        with self._tx() as db:
            copied = db.execute(self._q["copy_stream_items"], params).rowcount
            db.execute(self._q["copy_stream_heads"], {"dst": dst_run_id})
        return int(copied)

    # -- change notification -----------------------------------------------------------------
    async def wait_for_change(self, timeout: float) -> bool:
        """Poll ``PRAGMA data_version``: it changes when another connection commits."""
        return await self._poll_version("_data_version", timeout)

    async def wait_for_activity(self, timeout: float) -> bool:
        """As ``wait_for_change`` (any commit counts), remembering its own last version."""
        return await self._poll_version("_activity_version", timeout)

    async def _poll_version(self, seen: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            version = self.db.execute("PRAGMA data_version").fetchone()[0]
            if version != getattr(self, seen):
                setattr(self, seen, version)
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(_CHANGE_POLL, left))


def _owner_alive(lock_path: str) -> bool:
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        return False
    finally:
        os.close(fd)


class _SQLiteLedger(Ledger):
    """The SQLite part of ``migrations.migrate``: no lock around the whole, since each
    migration takes the file's write lock (``BEGIN IMMEDIATE``) for itself and re-checks
    there that no other process applied it meanwhile."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.where = repr(store.path)
        self.remedy = RECOVER.format(path=store.path)

    def locked(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    async def applied(self) -> list[tuple[Any, Any]]:
        db, q = self.store.db, self.store._q
        db.execute(q["create_migrations_table"])
        return db.execute(q["applied_migrations"]).fetchall()

    async def apply(self, version: int, name: str, sql: str) -> bool:
        q = self.store._q
        with self.store._tx() as db:
            if db.execute(q["migration_applied"], (version,)).fetchone() is not None:
                return False
            for statement in _statements(sql):
                db.execute(statement)
            db.execute(q["record_migration"], (version, name, time.time()))
        return True


def _statements(sql: str) -> list[str]:
    """Split a migration into complete statements (a trigger body holds several ';')."""
    code = "\n".join(ln.split("--", 1)[0] for ln in sql.splitlines())
    out: list[str] = []
    current = ""
    for piece in code.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \n;"):
                out.append(current.strip())
            current = ""
    return out
