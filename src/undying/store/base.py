"""The storage interfaces every backend implements (the records they speak in are in
``records``, re-exported here).

The interface is split by consumer into ports (``ReadSide``, ``RunJournal``, ``Blobs``,
``Leases``, ``Schedules``, ``Control``, ``Maintenance``; see "the ports" below), and
``Store`` is all of them.
The runtime only talks to a store through these ports, and the contract suite in
``tests/contract`` runs unchanged against every implementation. Payloads arrive already
encoded: a store never interprets a value, it only keeps bytes safe.

Fencing is the store's job: every write made on behalf of a run carries the epoch the writer
claimed it with, and a write whose epoch is no longer current raises ``LeaseLost`` and changes
nothing. Backends fold that check into the write itself (one statement, one round trip).
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from .records import (
    ARMED,
    CANCELLED,
    CLOSE_STREAM,
    COMPLETED,
    ERROR,
    FAILED,
    INTENT,
    OK,
    OPEN_STATUSES,
    PENDING,
    PROGRESS_STRIDE,
    PUBLISH,
    RETRY,
    RUN_STATUSES,
    RUNNING,
    SAVED,
    SPENT,
    TERMINAL,
    VALUE,
    WAITING,
    Claim,
    Entry,
    EventRecord,
    NewRun,
    QueueLimits,
    RunFilter,
    RunRecord,
    ScheduleRecord,
    StreamAppend,
    StreamInfo,
    StreamItem,
    StreamPage,
    UsageRow,
    UsageTotal,
    child_event_name,
    created_record,
    fence_error,
    progress_position,
    schedule_params,
    stream_page,
    stream_refusal,
    tick_params,
    usage_params,
    wait_key,
)

T = TypeVar("T")
log = logging.getLogger("undying.store")

#: the ports (defined here) and the records they speak in (``records``, re-exported)
__all__ = [
    "ARMED",
    "CANCELLED",
    "CLOSE_STREAM",
    "COMPLETED",
    "ERROR",
    "FAILED",
    "INTENT",
    "OK",
    "OPEN_STATUSES",
    "PENDING",
    "PROGRESS_STRIDE",
    "PUBLISH",
    "RETRY",
    "RUNNING",
    "RUN_STATUSES",
    "SAVED",
    "SPENT",
    "TERMINAL",
    "TRANSIENT_RETRIES",
    "VALUE",
    "WAITING",
    "Blobs",
    "Claim",
    "Control",
    "Entry",
    "EventRecord",
    "Leases",
    "Maintenance",
    "NewRun",
    "QueueLimits",
    "ReadSide",
    "RunFilter",
    "RunJournal",
    "RunRecord",
    "ScheduleRecord",
    "Schedules",
    "Store",
    "StreamAppend",
    "StreamInfo",
    "StreamItem",
    "StreamPage",
    "TransactionFnFailed",
    "UsageRow",
    "UsageTotal",
    "child_event_name",
    "created_record",
    "fence_error",
    "progress_position",
    "retry_transient",
    "schedule_params",
    "stream_page",
    "stream_refusal",
    "tick_params",
    "usage_params",
    "wait_key",
]


class TransactionFnFailed(Exception):
    """``fn`` of ``ctx.transaction`` itself raised (the transaction rolled back): an outcome
    to record and re-raise on replay, unlike a failure of the database around it."""

    def __init__(self, original: Exception) -> None:
        super().__init__(str(original))
        self.original = original


TRANSIENT_RETRIES = 8  # backoff 0.05 s doubling: ~13 s in all, enough for a server restart


async def retry_transient(op: Callable[[], Awaitable[T]], what: str) -> T:
    """Run a store operation, retrying what the database reports as a passing failure (a
    busy SQLite file, a dropped PostgreSQL connection) with backoff: ~3 s in all.

    undying's own errors (LeaseLost, ...) are answers, not failures, and are not retried.
    A write retried after a commit whose acknowledgement was lost is safe: it finds its
    own completed entry and is refused, and replay then returns that entry."""

    from ..errors import UndyingError

    for attempt in range(TRANSIENT_RETRIES):
        try:
            return await op()
        except (UndyingError, TransactionFnFailed, asyncio.CancelledError):
            raise
        except Exception as exc:
            if attempt == TRANSIENT_RETRIES - 1:
                raise
            log.warning("%s failed (%s); retrying", what, exc)
            await asyncio.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


# -- the ports ----------------------------------------------------------------------------------
# One interface per kind of consumer, so each consumer's signature says how much of the store
# it can reach: an operator tool typed ``ReadSide`` cannot write, the replay engine typed
# ``RunJournal`` cannot claim or delete, the GC typed ``Maintenance`` cannot start runs. Every
# backend implements them all, as ``Store``; each method is declared in exactly one port.


class ReadSide(abc.ABC):
    """What operator tools (the CLI's read commands, the web UI, ``App.store``) may do with a
    store: read runs, journals, payloads and events, and wait for changes.

    Nothing here writes, so a tool typed against ``ReadSide`` cannot reach the write path by
    mistake. ``get_blobs`` is here, not in ``Blobs``, because whoever reads a payload may meet
    a chunk reference and must be able to join it (``payloads.resolve``)."""

    url: str

    @abc.abstractmethod
    async def get_run(self, run_id: str) -> RunRecord | None: ...

    @abc.abstractmethod
    async def list_runs(self, flt: RunFilter) -> list[RunRecord]:
        """The runs matching ``flt``, newest first, ``flt.limit`` of them after ``flt.offset``."""

    @abc.abstractmethod
    async def count_runs_by_status(self, flt: RunFilter) -> dict[str, int]:
        """How many runs of each status match ``flt``, ignoring its status, offset and
        limit (the counts beside a status filter). Statuses without runs are left out."""

    @abc.abstractmethod
    async def list_workflows(self) -> list[str]:
        """The names of the workflows that have runs, sorted."""

    @abc.abstractmethod
    async def load_journal_meta(self, run_id: str) -> list[Entry]:
        """Every entry of the run in order, payloads included only when small (the rest are
        marked ``deferred`` and fetched with ``load_payloads``)."""

    @abc.abstractmethod
    async def load_payloads(self, run_id: str, seqs: Sequence[int]) -> dict[int, bytes]: ...

    @abc.abstractmethod
    async def get_blobs(self, hashes: Sequence[bytes]) -> dict[bytes, bytes]:
        """The stored blobs among ``hashes``; absent ones are left out."""

    @abc.abstractmethod
    async def list_events(self, run_id: str, limit: int = 1000) -> list[EventRecord]:
        """The events sent to the run, oldest first, at most ``limit`` of them (consumed or
        not, including those a finished child sends its parent)."""

    @abc.abstractmethod
    async def wait_for_change(self, timeout: float) -> bool:
        """Return when another process may have changed something (or after ``timeout``)."""

    @abc.abstractmethod
    async def load_usage(self, run_id: str) -> list[UsageTotal]:
        """The run's token usage (``undying.llm``) summed per (kind, outcome, provider,
        model), all generations."""

    @abc.abstractmethod
    async def read_stream(self, run_id: str, stream: str, offset: int, limit: int) -> StreamPage:
        """The stream's items from ``offset`` on (at most ``limit``), with the run's status
        and the stream's length and closing, read in one snapshot: when the page says the
        stream ended, its items are all there is."""

    @abc.abstractmethod
    async def list_streams(self, run_id: str) -> list[StreamInfo]:
        """The run's streams, oldest first."""

    @abc.abstractmethod
    async def wait_for_activity(self, timeout: float) -> bool:
        """Like ``wait_for_change``, but stream appends made elsewhere count too (on
        PostgreSQL they are announced apart, so that a token stream does not wake every
        worker's scheduler). One waiter per store, like ``wait_for_change``, and a separate
        one: each may be waited on without taking wake-ups from the other."""

    @abc.abstractmethod
    async def list_schedules(self) -> list[ScheduleRecord]:
        """Every schedule a worker has registered, by name."""


class Blobs(abc.ABC):
    """Storing the content-addressed chunks of large payloads (``payloads.offload``).

    A port of its own, rather than a method folded into ``RunJournal``, because storing
    chunks is not a journal operation: it is unfenced (a chunk belongs to no run and may be
    shared by many), idempotent (re-putting refreshes the chunk's ``written_at`` so GC spares
    it), and always done *before* the fenced entry that refers to it. ``offload`` asks for
    this and nothing else, so it cannot write an entry ahead of its chunks."""

    @abc.abstractmethod
    async def put_blobs(self, blobs: Mapping[bytes, bytes]) -> None:
        """Store each blob under its hash (re-putting a stored one refreshes its time)."""


class RunJournal(ReadSide, Blobs):
    """What the replay engine needs to execute one run it holds: the run's journal and the
    run's own fenced state changes.

    Every write takes the epoch the run was claimed with and is refused (``LeaseLost``,
    nothing changed) once the run changed hands. It extends ``ReadSide`` because replay reads
    the journal it writes (metadata, deferred payloads, chunks, a child's record), and
    ``Blobs`` because a large payload's chunks are stored before its entry."""

    @abc.abstractmethod
    async def write_entries(
        self, run_id: str, epoch: int, entries: Sequence[Entry], *, durable: bool = False
    ) -> None:
        """Append entries atomically (fenced). An entry may replace an open one (intent or
        armed) at the same position; a completed entry is never rewritten.
        ``durable`` forces an fsync of this commit whatever the store's durability setting."""

    @abc.abstractmethod
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
        """Record a terminal status (fenced). Wakes a parent waiting for this run."""

    @abc.abstractmethod
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
        """Release a waiting run (fenced): status waiting, no owner, wake conditions stored.

        If a matching event is already stored the run is made due at once, so an event that
        raced the suspension is never lost.
        """

    @abc.abstractmethod
    async def set_status_value(self, run_id: str, epoch: int, value: bytes) -> None: ...

    @abc.abstractmethod
    async def continue_as_new(self, run_id: str, epoch: int, new_input: bytes, now: float) -> None:
        """Start the run's next generation: fresh input, empty journal, lineage kept."""

    @abc.abstractmethod
    async def run_transaction(
        self,
        run_id: str,
        epoch: int,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        make_entries: Callable[[Any], Sequence[Entry]],
    ) -> Any:
        """Run ``fn(connection, *args)`` and write ``make_entries(result)`` in the same
        database transaction. Returns fn's result."""

    @abc.abstractmethod
    async def take_event(self, run_id: str, epoch: int, name: str, entry: Entry) -> bytes | None:
        """Consume the oldest unconsumed event ``name`` and journal it as ``entry`` (whose
        payload is set to the event's) in one transaction. None if there is no such event."""

    @abc.abstractmethod
    async def load_state(self, run_id: str, key: str, before_seq: int) -> bytes | None:
        """Payload of the latest ``ctx.state`` write of ``key`` before ``before_seq``."""

    @abc.abstractmethod
    async def append_stream(
        self,
        run_id: str,
        epoch: int,
        append: StreamAppend,
        entries: Sequence[Entry],
        now: float,
    ) -> bool:
        """Append to (or close) a stream of a running run, fenced, and write ``entries``
        (workflow code's buffered values and its publish or close entry) in the same
        transaction. Offsets are taken in commit order, dense per stream.

        Returns False, writing nothing, when this append was written already (the journal
        holds the entry at ``append.seq``, or the stream holds the batch's first origin).
        Raises ``LeaseLost`` when the epoch is not current, ``StreamClosed`` when the stream
        was closed or the run is not running."""

    @abc.abstractmethod
    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        """Write token-usage rows: a ``spent`` row replaces the one with its key, a ``saved``
        row adds its counts to it. Not fenced: tokens a zombie spent were spent."""


class Leases(abc.ABC):
    """The worker's side of ownership: claiming due runs, keeping their leases, handing them
    back, and learning what to cancel or when to wake.

    Kept apart from ``RunJournal`` because it is about *which* runs a worker holds, across
    runs, while the journal is about one run it already holds; each claim bumps the epoch
    that fences every ``RunJournal`` write."""

    @abc.abstractmethod
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
        """Claim due work: pending runs, waiting runs whose wake time passed, and running
        runs whose owner is dead or whose lease expired (including this owner's own: a lease
        it did not extend belongs to a run it no longer executes). Each claim bumps the
        epoch."""

    @abc.abstractmethod
    async def heartbeat(
        self, owner: str, lease_expires: float, run_ids: Sequence[str]
    ) -> list[str]:
        """Extend the leases of the runs this owner is executing (``run_ids``: a run whose
        task died is not extended, so its lease expires and it is taken over, by this worker
        too); return the ids among them whose cancellation was requested."""

    @abc.abstractmethod
    async def release_runs(self, owner: str, run_ids: Iterable[str], now: float) -> None:
        """Hand runs back (graceful shutdown): pending, no owner, claimable at once."""

    @abc.abstractmethod
    async def cancel_requests(self, owner: str) -> list[str]:
        """Ids of this owner's running runs whose cancellation was requested."""

    @abc.abstractmethod
    async def next_wake_at(self) -> float | None:
        """The earliest timer among waiting runs, so the scheduler sleeps exactly that long."""


class Schedules(abc.ABC):
    """The worker's side of schedules (``ticker``): registering the schedules it knows and
    creating the run of each tick.

    A tick's run has an id derived from the schedule and the tick, so every worker may try to
    fire every tick: the first creates the run, the others find it. Firing is refused, in the
    same transaction, while the schedule is paused."""

    @abc.abstractmethod
    async def register_schedules(
        self, schedules: Sequence[ScheduleRecord], now: float
    ) -> list[ScheduleRecord]:
        """Store each schedule's definition (inserting it, or replacing the definition of the
        one with its name) without touching its state; return them as stored, state
        included."""

    @abc.abstractmethod
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
        """Create ``run`` for the schedule's ``tick`` (like ``create_run``) and note the tick
        as fired, in one transaction, unless the schedule is paused or was resumed at or
        after ``tick``. Returns the run if this call created it; None if it existed already
        or firing was refused."""


class Control(abc.ABC):
    """The client API's writes (``App.start``, ``send_event``, ``cancel``, ``resume``,
    ``fork``, and a worker starting child runs): requests about runs, made by whoever holds
    no lease on them.

    None of these is fenced, since the caller owns no epoch; each is safe against the run's
    owner instead (an event is stored before it wakes anyone, a cancel only flags a running
    run for its owner, a resume touches only ended runs)."""

    @abc.abstractmethod
    async def create_run(
        self, run: NewRun, *, owner: str | None, lease_expires: float, now: float
    ) -> tuple[bool, RunRecord]:
        """Insert the run unless its id exists. Returns (created, the run as stored).

        With an owner, the run is created already claimed (status running, epoch 1), which
        saves the round trip of claiming a run this process is about to execute anyway.

        With a ``dedup_key``, in the same transaction: if a run of the workflow holds the key
        (its ``dedup_until`` is after ``now``), nothing is created and that run is returned;
        otherwise the run returned (created, or found by its id) holds the key until
        ``run.dedup_until``.
        """

    @abc.abstractmethod
    async def send_event(
        self, run_id: str, name: str, payload: bytes, key: str | None, now: float
    ) -> bool:
        """Store an event for a run; False if ``key`` was already delivered. Raises
        ``RunNotFound``. Wakes the run if it is waiting for that name."""

    @abc.abstractmethod
    async def request_cancel(self, run_id: str, error: bytes, now: float) -> list[str]:
        """Mark the run and its descendants cancelled. Runs nobody executes end at once;
        running ones are flagged for their owner. Returns the ids flagged while running."""

    @abc.abstractmethod
    async def resume_run(self, run_id: str, now: float) -> bool:
        """Make a failed or cancelled run pending again; its journal is kept and replayed."""

    async def fork_run(self, run: NewRun, src_run_id: str, before_seq: int, now: float) -> bool:
        """Create ``run`` (pending, unclaimed) holding the completed entries of ``src`` below
        ``before_seq`` and their stream items, all at once; False if the id exists.

        At once matters: a run visible before its journal is copied could be claimed by any
        worker and re-execute the very steps (and effects) the fork meant to reuse. The
        databases override this with one transaction; this default is atomic for a store
        whose methods never suspend (the in-memory one)."""
        created, _ = await self.create_run(run, owner=None, lease_expires=now, now=now)
        if created:
            await self.copy_journal(src_run_id, run.run_id, before_seq)
            await self.copy_streams(src_run_id, run.run_id, before_seq)
        return created

    @abc.abstractmethod
    async def copy_journal(self, src_run_id: str, dst_run_id: str, before_seq: int) -> int:
        """Copy the completed entries of ``src`` below ``before_seq`` to ``dst`` (fork)."""

    @abc.abstractmethod
    async def copy_streams(self, src_run_id: str, dst_run_id: str, before_seq: int) -> int:
        """Copy what ``src``'s current generation appended to its streams from journal
        positions below ``before_seq`` to ``dst`` (fork; after ``copy_journal``), offsets
        renumbered from 0; streams its copied journal closed are closed. Returns how many
        items were copied."""

    @abc.abstractmethod
    async def set_schedule_paused(self, name: str, paused: bool, now: float) -> bool | None:
        """Pause or resume a schedule. A resume notes ``now`` as ``resumed_at``, so the
        ticks that came due while it was paused never run. True if it changed, False if it
        was so already, None if there is no schedule of that name."""


class Maintenance(ReadSide):
    """What keeps the database's shape and size in order: ``undying migrate`` and garbage
    collection (``retention.collect_garbage``, ``undying gc``).

    It extends ``ReadSide`` because GC's mark phase walks chunk trees with ``get_blobs``.
    Deleting is only ever done here, and only to what no live run can need: ended top-level
    runs, and blobs unreferenced and not re-used since the mark."""

    @abc.abstractmethod
    async def migrate(self) -> list[str]:
        """Apply pending schema migrations (``undying migrate``); return the names applied."""

    @abc.abstractmethod
    async def delete_finished_runs(self, older_than: float) -> int:
        """Delete ended top-level runs last updated before ``older_than`` (with their
        children, journals, events, lineage and dedup keys), and dedup keys that expired
        before ``older_than``. Returns how many runs were deleted."""

    @abc.abstractmethod
    async def ref_payloads(self) -> list[bytes]:
        """Every journal payload that is a chunk reference (the roots for GC)."""

    @abc.abstractmethod
    async def blob_hashes(self, written_before: float) -> list[bytes]:
        """Hashes of blobs last written (or re-used) before ``written_before``."""

    @abc.abstractmethod
    async def delete_blobs(self, hashes: Sequence[bytes], written_before: float) -> None:
        """Delete these blobs unless one was re-used (re-written) since ``written_before``."""


class Store(RunJournal, Leases, Schedules, Control, Maintenance):
    """A durable home for runs, journals and events: every port, plus opening and closing.

    Only the composition root (``App``) and the worker hold a whole ``Store``; everything
    else is handed the port it uses."""

    @abc.abstractmethod
    async def open(self, worker_id: str) -> None:
        """Connect, apply migrations, and register ``worker_id`` as alive."""

    @abc.abstractmethod
    async def close(self) -> None: ...
