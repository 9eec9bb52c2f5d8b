"""Durable streams: a run appends values (``ctx.publish``), anyone reads them by offset.

A stream is append-only, per run, named like an event; its items have dense offsets 0, 1, 2,
... and it ends when ``ctx.close_stream`` closes it or when its run ends. Values go through
the app's codec and are stored inline (``validation.MAX_STREAM_VALUE_BYTES`` at most).

**From workflow code** a publish (or close) takes the next journal position, and its stream
row is committed in the same transaction as its journal entry (kind ``publish`` or
``close_stream``, no payload) and the values buffered before it: exactly once. A replay finds
the entry and appends nothing; a write retried after a lost acknowledgement finds it too.

**From a step** (``undying.publish`` or ``ctx.publish`` while ``undying.current_step()`` is
set) there is no position to take, since a step may run several times: its values are
appended at least once, keyed by (step position, epoch, attempt, index in the attempt), so a
batch retried after a database failure is written once. A step that runs again (a retry, or
a new execution after a crash) appends, before its new attempt's first value, a marker that
readers get as a ``StreamRetry``: the last ``discarded`` values that step published into the
stream came from an attempt that did not finish. A step's appends are batched by one writer
per (attempt, stream): a value published while a write is in flight joins the next batch.

**Readers** (``App.read_stream``) read pages and, between them, wait for this process's
appends (``RunHost.streams_changed`` -> ``LocalRuns.published``) and, through one watcher of
the store per App (``ActivityWatch``), for other processes' (SQLite's data_version,
PostgreSQL's LISTEN): never a tight poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from .codec import Codec
from .errors import InvalidArgument, LeaseLost, RunNotFound, SerializationError, UndyingError
from .journal import Recorder, ReplayDiverged, done
from .scope import StepInfo, current_execution, current_step
from .store.base import (
    CLOSE_STREAM,
    OK,
    PUBLISH,
    RETRY,
    Entry,
    ReadSide,
    StreamAppend,
    StreamItem,
    retry_transient,
)
from .validation import check_stream_value

log = logging.getLogger("undying.streams")

#: items a reader fetches per query
READ_BATCH = 500
#: a waiting reader reads again at least this often, whether or not it was woken
REFRESH = 5.0


@dataclass(frozen=True, slots=True)
class StreamRetry:
    """What ``App.read_stream`` yields where a step started publishing again.

    The step ``step`` (journal position ``position``) runs again, as attempt ``attempt`` (1
    when it runs again after a crash): the last ``discarded`` values it published into this
    stream, since it first ran or since its previous marker, came from an attempt that did
    not finish. A chat front end erases them; the new attempt's values follow. Values other
    steps published meanwhile are not counted."""

    step: str
    position: int
    attempt: int
    discarded: int


# -- workflow code: journaled appends --------------------------------------------------------
async def publish(rec: Recorder, seq: int, stream: str, value: Any) -> None:
    """``ctx.publish`` from workflow code, at journal position ``seq``."""
    if rec.recorded(seq, PUBLISH, stream) is not None:
        return
    payload = encode(rec.codec, stream, value)
    append = StreamAppend(stream, rec.run.generation, seq, payloads=[payload])
    await _journaled(rec, append, done(seq, PUBLISH, stream, OK, None))


async def close(rec: Recorder, seq: int, stream: str) -> None:
    """``ctx.close_stream`` at journal position ``seq``."""
    if rec.recorded(seq, CLOSE_STREAM, stream) is not None:
        return
    append = StreamAppend(stream, rec.run.generation, seq, close=True)
    await _journaled(rec, append, done(seq, CLOSE_STREAM, stream, OK, None))


def encode(codec: Codec, stream: str, value: Any) -> bytes:
    payload = codec.encode(value, root=f"value published to stream {stream!r}")
    check_stream_value(payload, stream)
    return payload


async def _journaled(rec: Recorder, append: StreamAppend, entry: Entry) -> None:
    """Write the append with its journal entry and the values buffered before it (after a
    write of buffered values another branch has in flight: they came first)."""
    if rec.flushing is not None and not rec.flushing.done():
        await asyncio.shield(rec.flushing)
    pending = rec.take_pending()
    try:
        await _append(rec, append, [*pending, entry])
    except BaseException:
        rec.pending[:0] = pending  # not written: they go with the run's next write
        raise


async def _append(rec: Recorder, append: StreamAppend, entries: list[Entry]) -> None:
    """One fenced append; a passing database failure is retried (the store makes a retry of
    a committed append a no-op); a lost lease closes the execution, as any journal write."""
    run = rec.run
    if rec.read_only:
        raise ReplayDiverged(
            f"run {run.run_id!r}: the code now publishes to stream {append.stream!r} at "
            f"journal position {append.seq}, which the recorded run never did"
        )

    def write() -> Any:
        return rec.store.append_stream(run.run_id, run.epoch, append, entries, time.time())

    try:
        await retry_transient(write, f"append to stream {append.stream!r} of run {run.run_id!r}")
    except LeaseLost:
        rec.closed = True
        raise
    rec.host.streams_changed(run.run_id)


# -- steps: at least once, with a marker between attempts --------------------------------
class StepStream:
    """What one step attempt publishes to one stream: values queued, and written in order,
    in batches, by one task at a time. The first batch asks for the marker."""

    def __init__(
        self, rec: Recorder, info: StepInfo, stream: str, after: StepStream | None
    ) -> None:
        self._rec = rec
        self._info = info
        self.attempt = info.attempt
        self._stream = stream
        #: the previous attempt's writer: its last batch must land before this attempt's marker
        self._after = after
        self._queue: list[bytes] = []
        self.queued = 0
        self._written = 0
        #: why a write was refused (LeaseLost, StreamClosed, ...): every later publish raises it
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None

    def add(self, value: Any) -> int:
        """Queue a value (encoded now: a bad one raises here); returns how many values this
        attempt has queued so far."""
        if self.error is not None:
            raise self.error
        self._queue.append(encode(self._rec.codec, self._stream, value))
        self.queued += 1
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._drain())
        return self.queued

    async def until(self, count: int) -> None:
        """Wait until the first ``count`` values queued are written (or raise why not)."""
        while self._written < count:
            if self.error is not None:
                raise self.error
            assert self.task is not None
            await asyncio.shield(self.task)
        if self.error is not None and self._written < count:
            raise self.error

    async def flush(self) -> None:
        await self.until(self.queued)

    async def _drain(self) -> None:
        if self._after is not None and self._after.task is not None:
            await asyncio.wait([self._after.task])
            self._after = None
        info = self._info
        while self._queue and self.error is None:
            batch, self._queue = self._queue, []
            marker = None
            if self._written == 0:
                marker = self._rec.codec.encode(info.name)
            append = StreamAppend(
                self._stream,
                info.generation,
                info.seq,
                info.attempt,
                self._written,
                batch,
                marker=marker,
            )
            try:
                await _append(self._rec, append, [])
            except Exception as exc:  # kept for the publishers, who raise it
                self.error = exc
                return
            except BaseException:
                self.error = UndyingError(f"the writer of stream {self._stream!r} was stopped")
                raise
            self._written += len(batch)


def step_stream(rec: Recorder, info: StepInfo, stream: str) -> StepStream:
    """The writer of this step attempt to ``stream`` (made at its first publish). The
    recorder keeps the latest attempt's writer of each (step, stream)."""
    key = (info.generation, info.seq, stream)
    writer: StepStream | None = rec.step_streams.get(key)
    if writer is None or writer.attempt != info.attempt:
        writer = rec.step_streams[key] = StepStream(rec, info, stream, writer)
    return writer


def running_step_stream(stream: str) -> StepStream:
    """The writer of the step attempt whose code is running to ``stream`` (the LLM adapters
    queue tokens on it without waiting for each, and flush it before the attempt ends)."""
    info, rec = current_step.get(), current_execution.get()
    if info is None or rec is None:
        raise InvalidArgument(f"publishing to stream {stream!r} needs a step of a running run")
    return step_stream(rec, info, stream)


async def publish_from_step(rec: Recorder, info: StepInfo, stream: str, value: Any) -> None:
    """``undying.publish`` (or ``ctx.publish``) in a step's code: appended when this returns."""
    if info.run_id != rec.run.run_id:
        raise UndyingError(
            f"a step of run {info.run_id!r} cannot publish to the streams of run {rec.run.run_id!r}"
        )
    writer = step_stream(rec, info, stream)
    await writer.until(writer.add(value))


# -- readers ---------------------------------------------------------------------------------
def decoded(codec: Codec, run_id: str, stream: str, item: StreamItem) -> Any:
    """A value, or a ``StreamRetry`` for a marker."""
    try:
        if item.kind == RETRY:
            step = "" if item.payload is None else str(codec.decode(item.payload))
            return StreamRetry(step, item.seq, item.attempt, item.discarded)
        return None if item.payload is None else codec.decode(item.payload)
    except SerializationError as exc:
        raise SerializationError(
            f"stream {stream!r} of run {run_id!r}, offset {item.offset}: {exc} (read on from "
            f"offset {item.offset + 1} to skip it)",
            path=exc.path,
        ) from exc


async def read(
    store: ReadSide,
    codec: Codec,
    run_id: str,
    stream: str,
    offset: int,
    ticket: Callable[[], asyncio.Event],
    watching: contextlib.AbstractAsyncContextManager[None],
) -> AsyncIterator[Any]:
    """Every item from ``offset`` on, in order, waiting for new ones, until the stream ends.

    ``ticket()`` is set at the next append seen in this process (``LocalRuns``); it is taken
    before each read, so an append made while a page is read is never missed; ``watching``
    is held while reading, so the App watches the store for other processes' appends."""
    async with watching:
        while True:
            woken = ticket()
            page = await store.read_stream(run_id, stream, offset, READ_BATCH)
            if page.run_status is None:
                raise RunNotFound(f"no run with id {run_id!r}")
            for item in page.items:
                yield decoded(codec, run_id, stream, item)
                offset = item.offset + 1
            if len(page.items) == READ_BATCH:
                continue
            if page.ended:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), REFRESH)


class ActivityWatch:
    """One App's watcher of the store for its stream readers: a single waiter on the store's
    ``wait_for_activity`` (made for one waiter) that turns each change into ``bump()``,
    running only while some reader waits."""

    #: one wait on the store lasts this long before the watcher checks it is still needed
    WAIT = 1.0

    def __init__(self, store: Callable[[], ReadSide], bump: Callable[[], None]) -> None:
        self._store = store
        self._bump = bump
        self._readers = 0
        self._task: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[None]:
        self._readers += 1
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._watch())
        try:
            yield
        finally:
            self._readers -= 1

    async def _watch(self) -> None:
        while self._readers > 0:
            try:
                changed = await self._store().wait_for_activity(self.WAIT)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broken connection: the store reconnects by itself
                log.warning("watching the store for stream appends failed (%s); retrying", exc)
                await asyncio.sleep(self.WAIT)
                changed = True
            if changed:
                self._bump()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._bump()  # readers still waiting look again (and find the store closed)
