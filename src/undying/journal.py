"""The replay engine's core: positions, the recorded journal, buffering and writes.

A run's journal is a sequence of entries, one per journaled call, numbered in call order.
``Recorder`` owns that numbering for one execution of a run: each call takes the next
position; when the journal already holds an entry there, replay hands it back (after checking
that the code still asks for the same kind and name); otherwise the call runs and its outcome
is written. Every layer above (steps, waits, the ``Context`` facade) goes through the recorder,
so the replay-or-record rule exists once.

Values that cost nothing to produce (``now``, ``random``, ``uuid4``, finished sleeps, state
writes) are not committed on their own: they are buffered and ride along with the next write,
and are always flushed before any step's effect runs, so a value an effect depends on is
durable before the effect happens.

Recovery loads the journal's *metadata* first (kind, name, status, digest, and the payload
only when it is small), then fetches large payloads lazily, in batches, as replay reaches them
(``JournalCursor``). Entries are dropped as soon as replay consumes them, so memory holds the
metadata of the whole journal plus one batch of large payloads, never every payload at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import warnings
from typing import TYPE_CHECKING, Any

from .codec import Codec, digest
from .errors import LeaseLost, NonDeterminismError, SerializationError, UndyingError
from .failures import rebuild_error
from .payloads import OFFLOAD_THRESHOLD, REF_MARK, offload, remember, resolve
from .signals import Suspended
from .store.base import (
    ARMED,
    ERROR,
    OK,
    Entry,
    ReadSide,
    RunJournal,
    RunRecord,
    retry_transient,
)

if TYPE_CHECKING:
    from .host import RunHost

REF_PREFIX = bytes([REF_MARK])
PAYLOAD_BATCH = 64
_NO_ARGS_DIGEST = b""


class ArgumentDigestChanged(UserWarning):
    """A replayed step was called with arguments that differ from the recorded ones."""


class ReplayDiverged(UndyingError):
    """A read-only replay reached a call the journal does not hold (see ``replay_check``)."""


class JournalCursor:
    """Hands out recorded entries by sequence number during replay."""

    __slots__ = ("_last_seq", "_run_id", "_store", "entries")

    def __init__(self, store: ReadSide, run_id: str, entries: list[Entry]) -> None:
        self._store = store
        self._run_id = run_id
        #: the entries replay has not consumed yet, by position
        self.entries = {e.seq: e for e in entries}
        self._last_seq = entries[-1].seq if entries else -1

    @classmethod
    async def load(cls, store: ReadSide, run_id: str) -> JournalCursor:
        return cls(store, run_id, await store.load_journal_meta(run_id))

    @classmethod
    def empty(cls, store: ReadSide, run_id: str) -> JournalCursor:
        return cls(store, run_id, [])

    def replaying(self, seq: int) -> bool:
        """Whether the journal holds entries at or after ``seq`` (old history ahead)."""
        return seq <= self._last_seq

    def take(self, seq: int) -> Entry | None:
        """The recorded entry at ``seq``, removed from the cursor (None if not recorded)."""
        if not self.entries:
            return None
        return self.entries.pop(seq, None)

    def peek(self, seq: int) -> Entry | None:
        return self.entries.get(seq)

    async def payload(self, entry: Entry) -> bytes | None:
        """The entry's payload, fetching it (and those of the next deferred entries) if needed."""
        if not entry.deferred:
            if entry.payload is not None and entry.payload[:1] == REF_PREFIX:
                entry.payload = await resolve(self._store, entry.payload)
            return entry.payload
        # Entries are kept in journal order and dropped once consumed, so the next deferred
        # ones are at the front of the dict.
        ahead = (e.seq for e in self.entries.values() if e.deferred and e.seq > entry.seq)
        wanted = [entry.seq, *itertools.islice(ahead, PAYLOAD_BATCH - 1)]
        fetched = await self._store.load_payloads(self._run_id, wanted)
        for seq, data in fetched.items():
            target = entry if seq == entry.seq else self.entries.get(seq)
            if target is not None:
                target.payload = data
                target.deferred = False
        if entry.deferred:
            raise SerializationError(
                f"journal entry {entry.seq} of run {self._run_id!r} lost its payload"
            )
        if entry.payload is not None and entry.payload[:1] == REF_PREFIX:
            entry.payload = await resolve(self._store, entry.payload)
        return entry.payload


def mismatch(seq: int, entry: Entry, kind: str, name: str) -> NonDeterminismError:
    return NonDeterminismError(
        f"replay diverged at journal position {seq}: the journal holds {entry.kind} "
        f"{entry.name!r}, but the workflow code now calls {kind} {name!r}. The code changed "
        "while this run was in flight: restore the old code path (use ctx.patched() to branch "
        "new code safely) or fork the run from an earlier step"
    )


def done(
    seq: int,
    kind: str,
    name: str,
    status: str,
    payload: bytes | None,
    digest: bytes | None = None,
    attempt: int = 1,
    started: float | None = None,
) -> Entry:
    """A journal entry with its outcome, finished now."""
    now = time.time()
    return Entry(seq, kind, name, status, payload, digest, attempt, started or now, now)


def armed(seq: int, kind: str, name: str, payload: bytes) -> Entry:
    """A timer or event wait whose deadline is recorded; it has not fired yet."""
    now = time.time()
    return Entry(seq, kind, name, ARMED, payload, None, 1, now, None)


class Recorder:
    """The journal of one execution of one run: positions, replay, buffered values, writes.

    Also the run's shared execution state that steps and waits coordinate through: the
    cancellation delivered to it, whether it was released (closed), the steps in flight and
    the wake-up event its waits sleep on."""

    __slots__ = (
        "_cancelled",
        "_seq",
        "_status_latest",
        "_status_task",
        "closed",
        "codec",
        "committed_blobs",
        "cursor",
        "digest_codec",
        "flushing",
        "host",
        "inflight",
        "pending",
        "read_only",
        "run",
        "step_streams",
        "store",
        "strict",
        "waits",
        "wakeup",
    )

    def __init__(
        self,
        store: RunJournal,
        host: RunHost,
        run: RunRecord,
        cursor: JournalCursor,
        *,
        codec: Codec,
        digest_codec: Codec,
        strict: bool,
        read_only: bool = False,
    ) -> None:
        self.store = store
        self.host = host
        self.run = run
        self.cursor = cursor
        self.codec = codec
        #: argument digests hash uncompressed frames: a zstd upgrade must not change them
        self.digest_codec = digest_codec
        self.strict = strict
        #: replay only: a call the journal does not hold raises ReplayDiverged, nothing runs
        self.read_only = read_only
        #: blobs this execution's committed entries refer to (payloads.offload skips them)
        self.committed_blobs: set[bytes] = set()
        self.pending: list[Entry] = []
        self.closed = False
        self.inflight = 0
        #: open waits of this execution: position -> (event name or None, deadline or None)
        self.waits: dict[int, tuple[str | None, float | None]] = {}
        self.wakeup = asyncio.Event()
        self._seq = 0
        self._cancelled: BaseException | None = None
        self.flushing: asyncio.Future[None] | None = None
        self._status_task: asyncio.Task[None] | None = None
        self._status_latest: bytes | None = None
        #: what steps publish (``streams.StepStream``): the latest attempt's writer of each
        #: (generation, step position, stream)
        self.step_streams: dict[tuple[int, int, str], Any] = {}

    def __repr__(self) -> str:
        return f"<Recorder run={self.run.run_id!r} seq={self._seq}>"

    @property
    def run_id(self) -> str:
        return self.run.run_id

    # -- positions --------------------------------------------------------------------------
    def position(self) -> int:
        """Take the next journal position (in call order, also inside ``asyncio.gather``)."""
        if self.closed:
            raise Suspended()
        seq = self._seq
        self._seq = seq + 1
        return seq

    @property
    def next_position(self) -> int:
        return self._seq

    def replaying(self, seq: int) -> bool:
        return self.cursor.replaying(seq)

    # -- cancellation and wake-ups ------------------------------------------------------------
    @property
    def cancelled(self) -> BaseException | None:
        return self._cancelled

    def cancel(self, exc: BaseException) -> None:
        """Deliver a cancellation: raised at the run's next journaled call (or wait)."""
        self._cancelled = exc
        self.wakeup.set()

    def raise_if_cancelled(self) -> None:
        if self._cancelled is not None:
            raise self._cancelled

    def wake(self) -> None:
        self.wakeup.set()

    # -- replay ---------------------------------------------------------------------------------
    def recorded(self, seq: int, kind: str, name: str) -> Entry | None:
        """The journal's entry at ``seq`` if it has one (checked to be the same call), else
        None, after which the caller runs the call: refused if the run was cancelled."""
        recorded = self.cursor.entries  # cursor.take(), inlined: this runs once per call
        entry = recorded.pop(seq, None) if recorded else None
        if entry is None:
            if self._cancelled is not None:
                raise self._cancelled
            if self.read_only:
                raise ReplayDiverged(
                    f"run {self.run.run_id!r}: the code now calls {kind} {name!r} at journal "
                    f"position {seq}, which the recorded run never did"
                )
            return None
        if entry.kind != kind or entry.name != name:
            raise mismatch(seq, entry, kind, name)
        return entry

    def check_digest(self, seq: int, entry: Entry, name: str, new: bytes | None) -> None:
        """Report a replayed call whose arguments changed (warning; error in strict mode)."""
        if new is None or entry.digest is None or new == entry.digest:
            return
        message = (
            f"step {name!r} at journal position {seq} was recorded with different arguments; "
            "the recorded result is used. If the change is intended (a new prompt, say), fork "
            "the run from this step to re-run it"
        )
        if self.strict:
            raise NonDeterminismError(message)
        warnings.warn(message, ArgumentDigestChanged, stacklevel=5)

    def digest(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes | None:
        if not args and not kwargs:
            return _NO_ARGS_DIGEST
        try:
            # Lists, not tuples: msgpack packs them natively (tuples take the slow ext path).
            value = [list(args), kwargs] if kwargs else list(args)
            return digest(self.digest_codec.encode(value))
        except SerializationError:
            return None  # unencodable arguments (a client object, say) are not compared

    async def value(self, entry: Entry) -> Any:
        """The recorded value of an entry (its payload decoded, loaded first if deferred)."""
        payload = entry.payload
        if entry.deferred or (payload is not None and payload[:1] == REF_PREFIX):
            payload = await self.cursor.payload(entry)
        return None if payload is None else self.codec.decode(payload)

    def inline_value(self, entry: Entry) -> Any:
        """The value of an entry whose payload is always small and inline (now, random...)."""
        return None if entry.payload is None else self.codec.decode(entry.payload)

    async def outcome(self, entry: Entry) -> Any:
        """The recorded outcome: the value, or the recorded error raised again."""
        value = await self.value(entry)
        if entry.status == ERROR:
            raise rebuild_error(value)
        return value

    # -- recording --------------------------------------------------------------------------------
    def buffer(self, seq: int, kind: str, name: str, payload: bytes | None) -> None:
        """Record a finished call that has no effect of its own (a clock read, a state write):
        it is written with the run's next write, and always before the next step's effect."""
        now = time.time()
        self.pending.append(Entry(seq, kind, name, OK, payload, None, 1, now, now))

    def take_pending(self) -> list[Entry]:
        pending, self.pending = self.pending, []
        return pending

    def has_pending(self) -> bool:
        """Buffered values not yet durable: some to write, or a write of them in flight."""
        return bool(self.pending) or (self.flushing is not None and not self.flushing.done())

    async def commit(self, entry: Entry, *, durable: bool = False) -> None:
        """Write ``entry`` now, with whatever values are buffered."""
        if self.pending:
            await self.write([*self.take_pending(), entry], durable=durable)
        else:
            await self.write([entry], durable=durable)

    async def write(self, entries: list[Entry], *, durable: bool = False) -> None:
        """Append entries (fenced by the run's epoch). A passing database failure (a busy
        file, a dropped connection, a full disk that frees up) is retried with backoff, the
        chunks of large payloads included; losing the lease closes this execution."""
        run = self.run
        if self.read_only:
            raise ReplayDiverged(
                f"run {run.run_id!r}: the code now makes a call at journal position "
                f"{entries[-1].seq} that the recorded run never made"
            )
        try:
            needed = None
            for entry in entries:  # a loop, not any(): this runs once per step
                if entry.payload is not None and len(entry.payload) > OFFLOAD_THRESHOLD:
                    needed = await offload(self.store, entries, self.committed_blobs)
                    break
            await self.store.write_entries(run.run_id, run.epoch, entries, durable=durable)
            if needed:
                remember(self.committed_blobs, needed)
        except LeaseLost:
            self.closed = True
            raise
        except UndyingError:
            raise
        except Exception:
            try:
                await retry_transient(
                    lambda: self._write_again(entries, durable),
                    f"journal write of run {run.run_id!r}",
                )
            except LeaseLost:
                self.closed = True
                raise

    async def _write_again(self, entries: list[Entry], durable: bool) -> None:
        """A retried write: the chunks too (a full disk may have refused them), each time."""
        await offload(self.store, entries)
        await self.store.write_entries(self.run.run_id, self.run.epoch, entries, durable=durable)

    async def flush(self) -> None:
        """Make every buffered value durable before the caller's effect runs.

        With parallel steps, another branch may have taken the buffered values and still be
        writing them; wait for that write too, not only for our own."""
        if self.pending:
            write = asyncio.ensure_future(self.write(self.take_pending()))
            self.flushing = write
            await write
        elif self.flushing is not None and not self.flushing.done():
            await asyncio.shield(self.flushing)

    # -- status (not journaled: it describes the run, it does not steer it) ------------------
    def publish_status(self, value: Any) -> None:
        encoded = self.codec.encode(value, root="status")
        self.host.status_changed(self.run.run_id, value)
        if self.cursor.replaying(self._seq):
            return
        self._status_latest = encoded
        if self._status_task is None or self._status_task.done():
            self._status_task = asyncio.ensure_future(self._write_status())

    async def _write_status(self) -> None:
        while self._status_latest is not None:
            value, self._status_latest = self._status_latest, None
            with contextlib.suppress(LeaseLost):
                await self.store.set_status_value(self.run.run_id, self.run.epoch, value)
