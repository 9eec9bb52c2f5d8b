"""The records stores speak in: run and entry statuses, the dataclasses the ports take and
return, and the small helpers every backend shares to build parameters and errors from them.

Split from ``base.py`` (the ports) so that each file has one job; ``base`` re-exports every
name here, so ``from undying.store.base import Entry`` keeps working.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidArgument, LeaseLost, StreamClosed

# Run statuses.
PENDING = "pending"
RUNNING = "running"
WAITING = "waiting"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})
#: every run status, in the order a run usually goes through them
RUN_STATUSES = (PENDING, RUNNING, WAITING, COMPLETED, FAILED, CANCELLED)


def child_event_name(child_run_id: str) -> str:
    """The internal event a finished child run sends its parent (SQLite's trigger in
    004_child_wakeup.sql spells the same prefix)."""
    return f"undying.child:{child_run_id}"


# Journal entry statuses.
OK = "ok"
ERROR = "error"
INTENT = "intent"  # an at-most-once step started; its outcome is not known yet
ARMED = "waiting"  # a timer or event wait whose deadline is recorded; it has not fired yet
OPEN_STATUSES = frozenset({INTENT, ARMED})


@dataclass(slots=True)
class Entry:
    """One journaled call: the addressable unit of a run's state."""

    seq: int
    kind: str
    name: str
    status: str
    payload: bytes | None = None
    digest: bytes | None = None
    attempt: int = 1
    started_at: float = 0.0
    finished_at: float | None = None
    deferred: bool = False  # payload not loaded yet (large; fetched lazily during replay)

    def as_row(self, run_id: str) -> tuple[Any, ...]:
        return (
            run_id,
            self.seq,
            self.kind,
            self.name,
            self.digest,
            self.status,
            self.attempt,
            self.started_at,
            self.finished_at,
            self.payload,
        )


@dataclass(slots=True)
class NewRun:
    """What ``App.start`` asks a store to create."""

    run_id: str
    workflow: str
    input: bytes
    parent_id: str | None = None
    queue: str | None = None
    priority: int = 0
    deadline: float | None = None
    #: runs of one queue with the same key share its ``per_key_concurrency`` limit
    concurrency_key: str | None = None
    #: while a run of this workflow holds this key (until its ``dedup_until``), a start with
    #: the same key returns that run instead of creating this one
    dedup_key: str | None = None
    dedup_until: float | None = None


@dataclass(slots=True)
class RunRecord:
    """A run as the store holds it."""

    run_id: str
    workflow: str
    status: str
    input: bytes
    epoch: int
    owner: str | None = None
    output: bytes | None = None
    error: bytes | None = None
    lease_expires: float | None = None
    wake_at: float | None = None
    cancel_requested: bool = False
    parent_id: str | None = None
    queue: str | None = None
    priority: int = 0
    deadline: float | None = None
    status_value: bytes | None = None
    generation: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    #: take-overs in a row that found the journal where the previous claim left it
    stalled_takeovers: int = 0
    #: where the journal stood at the last claim (see ``progress_position``)
    progress_mark: int = 0


def created_record(run: NewRun, owner: str | None, lease_expires: float, now: float) -> RunRecord:
    """The record of ``run`` just created (claimed at once with an owner: status running,
    epoch 1), as reading it back would give it."""
    status, epoch = (RUNNING, 1) if owner else (PENDING, 0)
    return RunRecord(
        run_id=run.run_id,
        workflow=run.workflow,
        status=status,
        input=run.input,
        epoch=epoch,
        owner=owner,
        lease_expires=lease_expires if owner else None,
        parent_id=run.parent_id,
        queue=run.queue,
        priority=run.priority,
        deadline=run.deadline,
        created_at=now,
        updated_at=now,
    )


def tick_params(
    name: str, tick: float, run: NewRun, owner: str | None, lease_expires: float, now: float
) -> dict[str, Any]:
    """What the ``fire_tick`` queries of both dialects take."""
    record = created_record(run, owner, lease_expires, now)
    return {
        "name": name,
        "tick": tick,
        "run_id": run.run_id,
        "workflow": run.workflow,
        "status": record.status,
        "input": run.input,
        "owner": owner,
        "lease_expires": record.lease_expires,
        "epoch": record.epoch,
        "queue": run.queue,
        "priority": run.priority,
        "now": now,
    }


#: ``progress_mark`` is ``generation * PROGRESS_STRIDE + position after the last entry``, so
#: a new generation (continue_as_new empties the journal) is progress too. Claims compute it
#: in SQL; positions are 32-bit in the journal, so they never reach the stride.
PROGRESS_STRIDE = 1 << 31


def progress_position(mark: int) -> tuple[int, int]:
    """(generation, journal position) a ``progress_mark`` stands for."""
    generation, position = divmod(mark, PROGRESS_STRIDE)
    return generation, position


@dataclass(slots=True)
class Claim:
    """A run this worker now owns, with the epoch that fences its writes."""

    run: RunRecord
    takeover: bool = False  # true when it was taken from a dead or expired owner


@dataclass(slots=True)
class QueueLimits:
    """Limits a worker applies when it claims runs from a named queue."""

    name: str
    concurrency: int | None = None  # across all workers
    worker_concurrency: int | None = None  # in one worker
    rate_limit: tuple[int, float] | None = None  # (n starts, per seconds), across all workers
    #: runs with the same ``concurrency_key`` running at once, across all workers
    per_key_concurrency: int | None = None

    @property
    def shared(self) -> bool:
        """Whether a limit counts what every worker does (claims must see one another's)."""
        return bool(self.concurrency is not None or self.rate_limit or self.per_key_concurrency)


@dataclass(slots=True)
class RunFilter:
    """Read-side filter for listing runs (CLI, UI). Fields left at None do not filter."""

    status: str | None = None
    workflow: str | None = None
    parent_id: str | None = None
    limit: int = 100
    #: only runs created at or after this time (epoch seconds): "younger than an age"
    created_after: float | None = None
    #: only runs whose id contains this text (case-sensitive, like run ids themselves)
    run_id_contains: str | None = None
    #: skip this many of the matching runs, newest first (pages of ``limit``)
    offset: int = 0

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in RUN_STATUSES:
            raise InvalidArgument(
                f"unknown run status {self.status!r}: use one of {', '.join(RUN_STATUSES)}"
            )
        if not isinstance(self.offset, int) or isinstance(self.offset, bool) or self.offset < 0:
            raise InvalidArgument(f"offset must be a whole number >= 0, not {self.offset!r}")
        if self.created_after is not None and (
            not isinstance(self.created_after, int | float) or isinstance(self.created_after, bool)
        ):
            raise InvalidArgument(
                f"created_after is a time in epoch seconds, not {self.created_after!r}"
            )
        if self.run_id_contains is not None and not isinstance(self.run_id_contains, str):
            raise InvalidArgument(
                f"run_id_contains must be a string, not {type(self.run_id_contains).__name__}"
            )


@dataclass(slots=True)
class ScheduleRecord:
    """A schedule as the store holds it: its definition (written by every worker that starts
    with it) and its state (paused, the latest tick fired), which only ticks and pause/resume
    change."""

    name: str
    workflow: str
    cron: str | None
    every: float | None  # seconds
    timezone: str | None
    missed: str  # skip latest catch_up
    max_catch_up: int | None = None
    paused: bool = False
    #: the latest tick a run was created for (epoch seconds), None before the first
    last_tick: float | None = None
    #: when it was last resumed: ticks at or before this time never run
    resumed_at: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


def schedule_params(schedule: ScheduleRecord, now: float) -> dict[str, Any]:
    """A schedule's definition as the ``register_schedule`` query takes it (both dialects)."""
    return {
        "name": schedule.name,
        "workflow": schedule.workflow,
        "cron": schedule.cron,
        "every": schedule.every,
        "timezone": schedule.timezone,
        "missed": schedule.missed,
        "max_catch_up": schedule.max_catch_up,
        "now": now,
    }


@dataclass(slots=True)
class EventRecord:
    """An event sent to a run, as operators see it (the UI's events panel)."""

    name: str
    key: str | None
    payload: bytes
    created_at: float
    #: the journal position of the wait that took it; None while no wait has taken it
    consumed_seq: int | None = None


# Stream item kinds.
VALUE = "value"  # a published value
RETRY = "retry"  # a marker: a step publishes again, its earlier attempts' values are void
#: the journal entries of workflow code's stream calls (their stream rows commit with them)
PUBLISH = "publish"
CLOSE_STREAM = "close_stream"


@dataclass(slots=True)
class StreamItem:
    """One item of a run's stream, as readers get it (``read_stream``).

    Offsets are dense per stream (0, 1, 2, ...), markers included, so a reader resumes
    exactly where it stopped by counting what it consumed."""

    offset: int
    kind: str  # VALUE or RETRY
    #: a value: its codec frame; a marker: the retried step's name, encoded
    payload: bytes | None
    generation: int
    #: the journal position of the publish, or of the step that published
    seq: int
    #: 0: published by workflow code (journaled); else the attempt of the publishing step
    attempt: int
    #: markers: how many values of the step's earlier attempts (since its last marker) are void
    discarded: int = 0
    created_at: float = 0.0


@dataclass(slots=True)
class StreamPage:
    """``read_stream``'s answer, all read in one snapshot."""

    #: the run's status; None when there is no such run
    run_status: str | None
    #: items in the stream now (the next item's offset); 0 for a stream never written
    length: int = 0
    #: when ``ctx.close_stream`` closed it (a stream also ends when its run ends)
    closed_at: float | None = None
    items: list[StreamItem] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        """Whether nothing can be appended any more: closed, or its run has ended (a resumed
        run reopens the streams it did not close)."""
        return self.closed_at is not None or self.run_status in TERMINAL


def stream_page(rows: Sequence[Sequence[Any]]) -> StreamPage:
    """A page from the rows of a ``read_stream`` query (both dialects): (run status, length,
    closed at, then the item's offset, kind, payload, generation, seq, attempt, discarded,
    created at, NULL when there is none)."""
    if not rows:
        return StreamPage(None)
    status, length, closed_at = rows[0][:3]
    items = [
        StreamItem(
            int(r[3]),
            r[4],
            None if r[5] is None else bytes(r[5]),
            int(r[6]),
            int(r[7]),
            int(r[8]),
            int(r[9]),
            float(r[10]),
        )
        for r in rows
        if r[3] is not None
    ]
    return StreamPage(status, int(length or 0), closed_at, items)


def stream_refusal(
    run_id: str, stream: str, epoch: int, current: tuple[int, str] | None
) -> Exception:
    """Why ``append_stream`` wrote nothing, from the run's (epoch, status) as it is now."""
    if current is None or current[0] != epoch:
        return fence_error(run_id, epoch, None if current is None else current[0])
    if current[1] != RUNNING:
        return StreamClosed(
            f"stream {stream!r} of run {run_id!r} is closed: the run has ended "
            f"({current[1]}), and a run's streams end with it"
        )
    return StreamClosed(
        f"stream {stream!r} of run {run_id!r} was closed by ctx.close_stream: publish before "
        "closing it, or to another stream"
    )


@dataclass(slots=True)
class StreamInfo:
    """One stream of a run (``list_streams``: the UI's panel, ``undying show``)."""

    name: str
    length: int
    closed_at: float | None
    created_at: float
    updated_at: float


@dataclass(slots=True)
class StreamAppend:
    """What one ``append_stream`` call writes to one stream of a run.

    Its origin, (generation, seq, writer's epoch, attempt, ``first_idx`` + i), is unique in
    the stream, so an append retried after a lost acknowledgement writes nothing twice."""

    stream: str
    generation: int
    #: workflow code: the journal position of its publish or close entry; a step: its own
    seq: int
    #: 0 for workflow code (the entries passed along journal the call); else the step attempt
    attempt: int = 0
    #: where this batch starts among the values its step attempt appended to the stream
    first_idx: int = 0
    payloads: Sequence[bytes] = ()
    #: close the stream (no payloads)
    close: bool = False
    #: a step attempt's first append: if earlier attempts of the step left values since its
    #: last marker, a RETRY marker with this payload (the step's name) goes first
    marker: bytes | None = None


# Usage row kinds.
SPENT = "spent"  # a provider call was made (every attempt, failed and cut ones included)
SAVED = "saved"  # replay answered calls from the journal: tokens not spent again


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Tokens of one model call attempt (``spent``), or of the calls one execution of the run
    answered from the journal (``saved``: ``attempt`` 0, ``seq`` -1, one row per model).

    The key is (run_id, generation, seq, epoch, attempt, kind, provider, model); writing a row
    again replaces it, so a streaming attempt can record what it spent so far and then the
    whole."""

    run_id: str
    generation: int
    seq: int
    epoch: int
    attempt: int
    kind: str
    provider: str
    model: str
    outcome: str  # ok error cut open saved
    calls: int = 1
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    created_at: float = 0.0


def usage_params(row: UsageRow) -> tuple[Any, ...]:
    """A usage row as the ``put_usage`` query takes it (both dialects)."""
    return (
        row.run_id,
        row.generation,
        row.seq,
        row.epoch,
        row.attempt,
        row.kind,
        row.provider,
        row.model,
        row.outcome,
        row.calls,
        row.input_tokens,
        row.output_tokens,
        row.cached_tokens,
        row.created_at,
    )


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """``load_usage``: the sums of a run's usage rows with one (kind, outcome, provider,
    model)."""

    kind: str
    outcome: str
    provider: str
    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int


def wait_key(names: Iterable[str]) -> str:
    """Event names a waiting run listens for, as stored: ``\\n`` around each name, so a
    store can match one with a substring search."""
    return "\n" + "\n".join(names) + "\n"


def fence_error(run_id: str, epoch: int, current_epoch: int | None) -> LeaseLost:
    """Why a fenced write wrote nothing, from the run's epoch as it is now (None: no run)."""
    if current_epoch is None:
        return LeaseLost(f"run {run_id!r} no longer exists")
    if current_epoch == epoch:
        return LeaseLost(
            f"run {run_id!r}: a completed journal entry is already at that position, and "
            "completed entries are never rewritten"
        )
    return LeaseLost(
        f"run {run_id!r} was taken over (epoch {current_epoch}, this worker holds {epoch}); "
        "this worker drops it"
    )
