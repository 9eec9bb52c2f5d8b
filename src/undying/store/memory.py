"""The in-memory store, for tests and demos: ``App("memory://")`` needs no file and no server.

It keeps the semantics of the SQLite store, query for query (``sql/sqlite/queries.sql`` and
the child wake-up trigger of ``004_child_wakeup.sql``), and passes the same contract suite, so
a test that passes here passes for the same reason on SQLite. Nothing survives the process.

``memory://NAME`` is a database shared by every store of that name in the process: several
Apps on it stand for several worker processes, and an App closed and opened again finds its
runs. Plain ``memory://`` is a database private to one store object.

Each method runs to completion without awaiting, on the event-loop thread, so it is as atomic
as one SQLite transaction: a batch is checked in full before anything is changed. The shared
database holds no event-loop objects, because tests open stores in successive
``asyncio.run()`` loops; each open store keeps its own ``asyncio.Event`` for
``wait_for_change``. Stores of one database must be used from one thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidArgument, RunNotFound, StoreError
from .base import (
    CANCELLED,
    ERROR,
    FAILED,
    OK,
    OPEN_STATUSES,
    PENDING,
    PROGRESS_STRIDE,
    RUNNING,
    SAVED,
    TERMINAL,
    WAITING,
    Claim,
    Entry,
    EventRecord,
    QueueLimits,
    RunFilter,
    RunRecord,
    ScheduleRecord,
    TransactionFnFailed,
    UsageRow,
    UsageTotal,
    child_event_name,
    fence_error,
    wait_key,
)
from .memory_schedules import MemoryRunsAndSchedules
from .memory_streams import MemoryStream, MemoryStreams
from .sqlite import DURABILITY, INLINE_PAYLOAD

SCHEME = "memory://"
_DELETED = object()


@dataclass(slots=True)
class _Event:
    name: str
    key: str | None
    payload: bytes
    created_at: float
    consumed_seq: int | None = None


@dataclass(eq=False)
class MemoryDatabase:
    """The tables of one in-memory database (the runs' records are never handed out: the
    store returns copies, and copies what it is given)."""

    runs: dict[str, RunRecord] = field(default_factory=dict)
    wait_events: dict[str, str] = field(default_factory=dict)  # waiting runs, as wait_key()
    children: dict[str, list[str]] = field(default_factory=dict)  # parent id -> child ids
    journals: dict[str, dict[int, Entry]] = field(default_factory=dict)
    events: dict[str, list[_Event]] = field(default_factory=dict)  # by run, oldest first
    lineage: dict[str, list[tuple[int, bytes, float]]] = field(default_factory=dict)
    blobs: dict[bytes, tuple[bytes, float]] = field(default_factory=dict)  # data, written_at
    queue_starts: dict[str, list[float]] = field(default_factory=dict)
    app_data: dict[str, Any] = field(default_factory=dict)  # what transactions wrote
    #: token usage rows by run, keyed as the usage table (generation, seq, epoch, attempt,
    #: kind, provider, model)
    usage: dict[str, dict[tuple[Any, ...], UsageRow]] = field(default_factory=dict)
    #: streams by run, then by name
    streams: dict[str, dict[str, MemoryStream]] = field(default_factory=dict)
    #: the concurrency key of each run started with one (runs.concurrency_key)
    concurrency_keys: dict[str, str] = field(default_factory=dict)
    #: (workflow, dedup key) -> (the run holding it, until when)
    dedup_keys: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    schedules: dict[str, ScheduleRecord] = field(default_factory=dict)
    #: the open stores by worker id: a run's owner is alive while its store is open
    live: dict[str, MemoryStore] = field(default_factory=dict)


_NAMED: dict[str, MemoryDatabase] = {}


def drop_database(name: str) -> bool:
    """Forget the named database ``memory://NAME`` (False if there was none), so a test can
    reuse a name and start empty. Stores already open on it keep their data; stores opened
    afterwards get a new, empty database."""
    return _NAMED.pop(name, None) is not None


class MemoryTransaction:
    """What ``fn`` of ``ctx.transaction(fn, ...)`` gets on a memory store, in place of a
    database connection: a key-value table shared by the stores of the database. Writes are
    staged and kept only if ``fn`` returns and its journal entry is accepted, like rows
    written on the connection of a SQL store. Values are kept as given (not copied)."""

    def __init__(self, committed: dict[str, Any]) -> None:
        self._committed = committed
        self._staged: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        value = self._staged.get(key, self._committed.get(key, default))
        return default if value is _DELETED else value

    def set(self, key: str, value: Any) -> None:
        self._staged[key] = value

    def delete(self, key: str) -> None:
        self._staged[key] = _DELETED

    def __contains__(self, key: object) -> bool:
        if key in self._staged:
            return self._staged[key] is not _DELETED
        return key in self._committed

    def _commit(self) -> None:
        for key, value in self._staged.items():
            if value is _DELETED:
                self._committed.pop(key, None)
            else:
                self._committed[key] = value


def _copy(entry: Entry) -> Entry:
    payload = None if entry.payload is None else bytes(entry.payload)
    return dataclasses.replace(entry, payload=payload, deferred=False)


def _listens(key: str | None, name: str) -> bool:
    return key is not None and f"\n{name}\n" in key


class MemoryStore(MemoryStreams, MemoryRunsAndSchedules):
    """A store whose database is a few dicts in this process (see the module docstring)."""

    def __init__(self, url: str = SCHEME, *, durability: str = "normal") -> None:
        if not isinstance(url, str) or not url.startswith(SCHEME):
            raise InvalidArgument(
                f"bad memory URL {url!r}: use memory:// (private) or memory://NAME (shared by "
                "every App of this process that names it)"
            )
        if durability not in DURABILITY:
            raise InvalidArgument(
                f"durability must be one of {sorted(DURABILITY)}, not {durability!r} (a memory "
                "database keeps nothing past the process whichever you pick)"
            )
        self.url = url
        self.name = url[len(SCHEME) :]
        self.durability = durability
        self._private = None if self.name else MemoryDatabase()
        self._database: MemoryDatabase | None = None
        self._changed: asyncio.Event | None = None  # bound to the loop the store is used in
        self._activity: asyncio.Event | None = None
        self._worker_id = ""

    # -- lifecycle ------------------------------------------------------------------------------
    async def open(self, worker_id: str) -> None:
        if self._database is not None:
            return
        db = self._private
        if db is None:
            db = _NAMED.setdefault(self.name, MemoryDatabase())
        if worker_id in db.live:
            raise StoreError(
                f"worker id {worker_id!r} is already in use on {self.url!r}; each App needs its own"
            )
        db.live[worker_id] = self
        self._database, self._worker_id = db, worker_id
        self._changed = asyncio.Event()
        self._activity = asyncio.Event()

    async def close(self) -> None:
        db, self._database = self._database, None
        if db is not None and db.live.get(self._worker_id) is self:
            del db.live[self._worker_id]  # its runs' owner is now dead: taken over at once
        for flag in (self._changed, self._activity):
            if flag is not None:
                flag.set()  # a pending wait returns
        self._changed = self._activity = None

    async def migrate(self) -> list[str]:
        return []  # there is no schema: a new database is already current

    @property
    def db(self) -> MemoryDatabase:
        if self._database is None:
            raise StoreError("the store is not open: use `async with app:` first")
        return self._database

    def _committed(self) -> None:
        """Something changed: wake the other open stores' ``wait_for_change``."""
        for store in self.db.live.values():
            if store is not self and store._changed is not None:
                store._changed.set()
                if store._activity is not None:
                    store._activity.set()

    def _fenced(self, run_id: str, epoch: int) -> RunRecord:
        run = self.db.runs.get(run_id)
        if run is None or run.epoch != epoch:
            raise fence_error(run_id, epoch, None if run is None else run.epoch)
        return run

    def _check_writable(self, run_id: str, epoch: int, entries: Sequence[Entry]) -> None:
        """Raise LeaseLost, before anything is written, if the batch would be refused: a
        stale epoch, or a completed entry at one of its positions."""
        self._fenced(run_id, epoch)
        journal = self.db.journals.get(run_id, {})
        batch: dict[int, str] = {}
        for entry in entries:
            current = batch.get(entry.seq)
            if current is None and entry.seq in journal:
                current = journal[entry.seq].status
            if current is not None and current not in OPEN_STATUSES:
                raise fence_error(run_id, epoch, epoch)
            batch[entry.seq] = entry.status

    def _append(self, run_id: str, entries: Sequence[Entry]) -> None:
        journal = self.db.journals.setdefault(run_id, {})
        for entry in entries:
            journal[entry.seq] = _copy(entry)

    # -- runs (created in memory_schedules) --------------------------------------------------------
    async def get_run(self, run_id: str) -> RunRecord | None:
        run = self.db.runs.get(run_id)
        return None if run is None else dataclasses.replace(run)

    def _matching(self, flt: RunFilter) -> Iterator[RunRecord]:
        """Runs matching every field of ``flt`` but status, offset and limit."""
        for run in reversed(self.db.runs.values()):
            if (
                (flt.workflow is None or run.workflow == flt.workflow)
                and (flt.parent_id is None or run.parent_id == flt.parent_id)
                and (flt.created_after is None or run.created_at >= flt.created_after)
                and (flt.run_id_contains is None or flt.run_id_contains in run.run_id)
            ):
                yield run

    async def list_runs(self, flt: RunFilter) -> list[RunRecord]:
        found = [r for r in self._matching(flt) if flt.status is None or r.status == flt.status]
        found.sort(key=lambda run: run.created_at, reverse=True)
        del found[: flt.offset]
        if flt.limit >= 0:  # as SQLite's LIMIT: a negative one is no limit
            del found[flt.limit :]
        return [dataclasses.replace(run) for run in found]

    async def count_runs_by_status(self, flt: RunFilter) -> dict[str, int]:
        counts: dict[str, int] = {}
        for run in self._matching(flt):
            counts[run.status] = counts.get(run.status, 0) + 1
        return counts

    async def list_workflows(self) -> list[str]:
        return sorted({run.workflow for run in self.db.runs.values()})

    async def list_events(self, run_id: str, limit: int = 1000) -> list[EventRecord]:
        events = self.db.events.get(run_id, [])
        if limit >= 0:  # as SQLite's LIMIT: a negative one is no limit
            events = events[:limit]
        return [
            EventRecord(e.name, e.key, bytes(e.payload), e.created_at, e.consumed_seq)
            for e in events
        ]

    def _set_status(self, run: RunRecord, status: str, now: float) -> None:
        """Change a run's status, telling a parent when the run ends (SQLite's trigger
        ``runs_wake_parent``): the event ``undying.child:<id>``, and a wake-up if the
        parent waits for it."""
        ended = status in TERMINAL and run.status not in TERMINAL
        run.status, run.updated_at = status, now
        if status != WAITING:
            self.db.wait_events.pop(run.run_id, None)
        if ended and run.parent_id is not None:
            name = child_event_name(run.run_id)
            self._insert_event(run.parent_id, name, name, b"", now)
            self._wake(run.parent_id, name, now)

    def _wake(self, run_id: str, name: str, now: float) -> None:
        run = self.db.runs.get(run_id)
        if run and run.status == WAITING and _listens(self.db.wait_events.get(run_id), name):
            run.wake_at, run.updated_at = 0, now

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
        self._check_writable(run_id, epoch, pending)
        self._append(run_id, pending)
        run = self.db.runs[run_id]
        run.output = None if output is None else bytes(output)
        run.error = None if error is None else bytes(error)
        run.owner = run.lease_expires = run.wake_at = None
        self._set_status(run, status, now)
        self._committed()

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
        self._check_writable(run_id, epoch, pending)
        self._append(run_id, pending)
        run = self.db.runs[run_id]
        stored = any(
            e.consumed_seq is None and _listens(key, e.name) for e in self.db.events.get(run_id, ())
        )
        run.owner = run.lease_expires = None
        run.wake_at = 0 if run.cancel_requested or stored else wake_at
        self._set_status(run, WAITING, now)
        self.db.wait_events[run_id] = key
        self._committed()

    async def release_runs(self, owner: str, run_ids: Iterable[str], now: float) -> None:
        released = False
        for run_id in run_ids:
            run = self.db.runs.get(run_id)
            if run is not None and run.owner == owner and run.status == RUNNING:
                run.owner = run.lease_expires = None
                self._set_status(run, PENDING, now)
                released = True
        if released:
            self._committed()

    async def resume_run(self, run_id: str, now: float) -> bool:
        run = self.db.runs.get(run_id)
        if run is None or run.status not in (FAILED, CANCELLED):
            return False
        run.error, run.cancel_requested = None, False
        run.owner = run.lease_expires = None
        run.stalled_takeovers = 0
        self._set_status(run, PENDING, now)
        self._committed()
        return True

    async def set_status_value(self, run_id: str, epoch: int, value: bytes) -> None:
        run = self._fenced(run_id, epoch)
        run.status_value, run.updated_at = bytes(value), time.time()
        self._committed()

    async def continue_as_new(self, run_id: str, epoch: int, new_input: bytes, now: float) -> None:
        run = self._fenced(run_id, epoch)
        self.db.lineage.setdefault(run_id, []).append((run.generation, run.input, now))
        self.db.journals.pop(run_id, None)
        run.input, run.generation, run.status_value = bytes(new_input), run.generation + 1, None
        run.updated_at = now
        self._committed()

    # -- claiming and leases ----------------------------------------------------------------------
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
        db = self.db
        claims: list[Claim] = []
        for run in db.runs.values():  # take-over: expired leases and dead owners
            if len(claims) == limit:
                break
            if run.status == RUNNING and (
                (run.lease_expires is not None and run.lease_expires < now)
                or (run.owner is not None and run.owner != owner and run.owner not in db.live)
            ):
                run.owner, run.lease_expires, run.epoch = owner, lease_expires, run.epoch + 1
                run.updated_at = now
                self._note_progress(run, takeover=True)
                claims.append(Claim(dataclasses.replace(run), takeover=True))
        limit -= len(claims)
        for name, limits in queues.items():
            allowed = min(self._queue_room(limits, running_per_queue.get(name, 0), now), limit)
            if allowed <= 0:
                continue
            taken = self._claim_due(
                name, owner, lease_expires, now, allowed, limits.per_key_concurrency
            )
            if limits.rate_limit:
                db.queue_starts.setdefault(name, []).extend([now] * len(taken))
            claims += taken
            limit -= len(taken)
        if limit > 0:
            claims += self._claim_due(None, owner, lease_expires, now, limit)
        if claims:
            self._committed()
        return claims

    def _claim_due(
        self,
        queue: str | None,
        owner: str,
        lease_expires: float,
        now: float,
        limit: int,
        per_key: int | None = None,
    ) -> list[Claim]:
        """Claim pending runs and waiting runs whose wake time passed, of one queue (None: of
        no queue), highest priority first, then oldest; with ``per_key``, a run with a
        concurrency key only while fewer than that of its key run (claim_queue_per_key)."""
        keys = self.db.concurrency_keys if per_key is not None else {}
        busy: dict[str, int] = {}
        for run in self.db.runs.values():
            key = keys.get(run.run_id)
            if key is not None and run.queue == queue and run.status == RUNNING:
                busy[key] = busy.get(key, 0) + 1
        due = [
            run
            for run in self.db.runs.values()
            if run.queue == queue
            and (
                run.status == PENDING
                or (run.status == WAITING and run.wake_at is not None and run.wake_at <= now)
            )
        ]
        due.sort(key=lambda run: (-run.priority, run.created_at))
        claims: list[Claim] = []
        for run in due:
            if len(claims) == limit:
                break
            key = keys.get(run.run_id)
            if key is not None and per_key is not None:
                if busy.get(key, 0) >= per_key:
                    continue
                busy[key] = busy.get(key, 0) + 1
            run.owner, run.lease_expires, run.epoch = owner, lease_expires, run.epoch + 1
            run.wake_at = None
            self._set_status(run, RUNNING, now)
            self._note_progress(run, takeover=False)
            claims.append(Claim(dataclasses.replace(run)))
        return claims

    def _note_progress(self, run: RunRecord, *, takeover: bool) -> None:
        """Where the journal stands at this claim (the run_progress view of the SQL stores): a
        take-over that finds it unmoved counts as stalled, any movement resets the count."""
        journal = self.db.journals.get(run.run_id)
        mark = run.generation * PROGRESS_STRIDE + (max(journal) + 1 if journal else 0)
        if mark != run.progress_mark:
            run.stalled_takeovers = 0
        elif takeover:
            run.stalled_takeovers += 1
        run.progress_mark = mark

    def _queue_room(self, limits: QueueLimits, mine: int, now: float) -> int:
        room = 1 << 30
        if limits.worker_concurrency is not None:
            room = min(room, limits.worker_concurrency - mine)
        if limits.concurrency is not None:
            running = sum(
                1 for r in self.db.runs.values() if r.queue == limits.name and r.status == RUNNING
            )
            room = min(room, limits.concurrency - running)
        if limits.rate_limit is not None:
            count, per = limits.rate_limit
            starts = self.db.queue_starts.get(limits.name, [])
            starts[:] = [t for t in starts if t > now - per]
            room = min(room, count - len(starts))
        return room

    def _owned(self, owner: str) -> Iterator[RunRecord]:
        return (r for r in self.db.runs.values() if r.owner == owner and r.status == RUNNING)

    async def heartbeat(
        self, owner: str, lease_expires: float, run_ids: Sequence[str]
    ) -> list[str]:
        executing = set(run_ids)
        extended = False
        for run in self._owned(owner):
            if run.run_id in executing:
                run.lease_expires, extended = lease_expires, True
        if extended:
            self._committed()
        return await self.cancel_requests(owner)

    async def cancel_requests(self, owner: str) -> list[str]:
        return [r.run_id for r in self._owned(owner) if r.cancel_requested]

    async def next_wake_at(self) -> float | None:
        runs = self.db.runs.values()
        return min(
            (r.wake_at for r in runs if r.status == WAITING and r.wake_at is not None), default=None
        )

    # -- journal ----------------------------------------------------------------------------------
    async def write_entries(
        self, run_id: str, epoch: int, entries: Sequence[Entry], *, durable: bool = False
    ) -> None:
        if not entries:
            return  # as on SQLite: nothing to write, nothing to fence
        self._check_writable(run_id, epoch, entries)
        self._append(run_id, entries)
        self._committed()

    async def load_journal_meta(self, run_id: str) -> list[Entry]:
        journal = self.db.journals.get(run_id, {})
        out: list[Entry] = []
        for seq in sorted(journal):
            entry = _copy(journal[seq])
            if entry.payload is not None and len(entry.payload) > INLINE_PAYLOAD:
                entry.payload, entry.deferred = None, True  # fetched with load_payloads
            out.append(entry)
        return out

    async def load_payloads(self, run_id: str, seqs: Sequence[int]) -> dict[int, bytes]:
        journal = self.db.journals.get(run_id, {})
        out: dict[int, bytes] = {}
        for seq in seqs:
            entry = journal.get(seq)
            if entry is not None and entry.payload is not None:
                out[seq] = entry.payload
        return out

    async def copy_journal(self, src_run_id: str, dst_run_id: str, before_seq: int) -> int:
        source = self.db.journals.get(src_run_id, {})
        copied = [source[s] for s in sorted(source) if s < before_seq]
        copied = [e for e in copied if e.status in (OK, ERROR)]
        target = self.db.journals.get(dst_run_id, {})
        clash = [e.seq for e in copied if e.seq in target]
        if clash:
            raise StoreError(
                f"cannot copy the journal of {src_run_id!r} to {dst_run_id!r}: it already has "
                f"entries at positions {clash}; fork into a new run"
            )
        self._append(dst_run_id, copied)
        if copied:
            self._committed()
        return len(copied)

    async def run_transaction(
        self,
        run_id: str,
        epoch: int,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        make_entries: Callable[[Any], Sequence[Entry]],
    ) -> Any:
        """``fn`` gets a ``MemoryTransaction`` (a key-value table); it may be sync or async.
        A zombie's fn is not run at all, and the fence is checked again after fn, which may
        have awaited while the run changed hands."""
        self._fenced(run_id, epoch)
        tx = MemoryTransaction(self.db.app_data)
        try:
            result = fn(tx, *args)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            raise TransactionFnFailed(exc) from exc
        entries = make_entries(result)
        self._check_writable(run_id, epoch, entries)
        tx._commit()
        self._append(run_id, entries)
        self._committed()
        return result

    async def load_state(self, run_id: str, key: str, before_seq: int) -> bytes | None:
        journal = self.db.journals.get(run_id, {})
        for seq in sorted((s for s in journal if s < before_seq), reverse=True):
            entry = journal[seq]
            if entry.kind == "state" and entry.name == key and entry.status == OK:
                return entry.payload
        return None

    # -- retention and garbage collection ---------------------------------------------------------
    def _tree(self, run_id: str) -> list[RunRecord]:
        """The run and all its descendants, the run first."""
        runs, children = self.db.runs, self.db.children
        tree: list[RunRecord] = [runs[run_id]] if run_id in runs else []
        seen = {run_id}
        for run in tree:  # grows while it is walked: breadth first
            for child in children.get(run.run_id, ()):
                if child in runs and child not in seen:
                    seen.add(child)
                    tree.append(runs[child])
        return tree

    async def delete_finished_runs(self, older_than: float) -> int:
        db = self.db
        old = [
            r.run_id
            for r in db.runs.values()
            if r.status in TERMINAL and r.updated_at < older_than and r.parent_id is None
        ]
        tables: tuple[dict[str, Any], ...] = (db.runs, db.wait_events, db.children)
        tables += (db.journals, db.events, db.lineage, db.usage, db.streams)
        deleted: set[str] = set()
        for root in old:
            for run in self._tree(root):
                for table in tables:
                    table.pop(run.run_id, None)
                deleted.add(run.run_id)
        self._forget_dedup_keys(deleted, older_than)
        if deleted:
            self._committed()
        return len(deleted)

    async def ref_payloads(self) -> list[bytes]:
        return [
            entry.payload
            for journal in self.db.journals.values()
            for entry in journal.values()
            if entry.payload is not None and entry.payload[:1] == b"\x10"
        ]

    async def blob_hashes(self, written_before: float) -> list[bytes]:
        return [h for h, (_, written_at) in self.db.blobs.items() if written_at < written_before]

    async def delete_blobs(self, hashes: Sequence[bytes], written_before: float) -> None:
        blobs = self.db.blobs
        for h in hashes:
            kept = blobs.get(h)
            if kept is not None and kept[1] < written_before:
                del blobs[h]

    # -- token usage (put_usage / load_usage in sql/sqlite/queries.sql) -------------------------
    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        if not rows:
            return
        for row in rows:
            table = self.db.usage.setdefault(row.run_id, {})
            key = (
                row.generation,
                row.seq,
                row.epoch,
                row.attempt,
                row.kind,
                row.provider,
                row.model,
            )
            kept = table.get(key)
            if kept is not None and row.kind == SAVED:  # saved rows add up
                row = dataclasses.replace(
                    row,
                    calls=kept.calls + row.calls,
                    input_tokens=kept.input_tokens + row.input_tokens,
                    output_tokens=kept.output_tokens + row.output_tokens,
                    cached_tokens=kept.cached_tokens + row.cached_tokens,
                )
            table[key] = row
        self._committed()

    async def load_usage(self, run_id: str) -> list[UsageTotal]:
        sums: dict[tuple[str, str, str, str], list[int]] = {}
        for row in self.db.usage.get(run_id, {}).values():
            total = sums.setdefault((row.kind, row.outcome, row.provider, row.model), [0] * 4)
            for i, n in enumerate(
                (row.calls, row.input_tokens, row.output_tokens, row.cached_tokens)
            ):
                total[i] += n
        order = sorted(sums, key=lambda k: (k[0], k[2], k[3], k[1]))
        return [UsageTotal(*key, *sums[key]) for key in order]

    # -- blobs ------------------------------------------------------------------------------------
    async def put_blobs(self, blobs: Mapping[bytes, bytes]) -> None:
        if not blobs:
            return
        stored, now = self.db.blobs, time.time()
        for h, data in blobs.items():
            kept = stored.get(h)  # a blob re-used keeps its bytes; its time is refreshed
            stored[bytes(h)] = (bytes(data) if kept is None else kept[0], now)
        self._committed()

    async def get_blobs(self, hashes: Sequence[bytes]) -> dict[bytes, bytes]:
        stored = self.db.blobs
        return {h: stored[h][0] for h in hashes if h in stored}

    # -- events and cancellation ----------------------------------------------------------------
    def _insert_event(
        self, run_id: str, name: str, key: str | None, payload: bytes, now: float
    ) -> bool:
        events = self.db.events.setdefault(run_id, [])
        if key is not None and any(e.key == key for e in events):
            return False  # delivered already
        events.append(_Event(name, key, bytes(payload), now))
        return True

    async def send_event(
        self, run_id: str, name: str, payload: bytes, key: str | None, now: float
    ) -> bool:
        if run_id not in self.db.runs:
            raise RunNotFound(f"no run with id {run_id!r}")
        if not self._insert_event(run_id, name, key, payload, now):
            return False
        self._wake(run_id, name, now)
        self._committed()
        return True

    async def take_event(self, run_id: str, epoch: int, name: str, entry: Entry) -> bytes | None:
        events = self.db.events.get(run_id, ())
        oldest = next((e for e in events if e.name == name and e.consumed_seq is None), None)
        if oldest is None:
            return None
        entry.payload = oldest.payload
        self._check_writable(run_id, epoch, [entry])
        self._append(run_id, [entry])
        oldest.consumed_seq = entry.seq
        self._committed()
        return oldest.payload

    async def request_cancel(self, run_id: str, error: bytes, now: float) -> list[str]:
        tree = self._tree(run_id)
        if not tree:
            raise RunNotFound(f"no run with id {run_id!r}")
        flagged: list[str] = []
        for run in tree:
            if run.status == RUNNING:
                run.cancel_requested, run.updated_at = True, now
                flagged.append(run.run_id)
            elif run.status in (PENDING, WAITING):  # ends at once; the parent is told
                run.error, run.cancel_requested = bytes(error), True
                run.owner = run.wake_at = None
                self._set_status(run, CANCELLED, now)
        self._committed()
        return flagged

    # -- change notification ----------------------------------------------------------------------
    async def wait_for_change(self, timeout: float) -> bool:
        """Wait until another store of this database changes something (each store's own
        writes do not wake it, as on SQLite)."""
        return await self._wait(self._changed, timeout)

    async def wait_for_activity(self, timeout: float) -> bool:
        """As ``wait_for_change`` (any change counts, as on SQLite), with a flag of its own."""
        return await self._wait(self._activity, timeout)

    async def _wait(self, changed: asyncio.Event | None, timeout: float) -> bool:
        if changed is None:
            raise StoreError("the store is not open: use `async with app:` first")
        if not changed.is_set():
            try:
                await asyncio.wait_for(changed.wait(), max(timeout, 0.0))
            except TimeoutError:
                return False
        changed.clear()
        return True
