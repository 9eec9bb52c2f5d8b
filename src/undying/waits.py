"""Durable waits: sleeps, events, child runs and races.

A wait records its deadline first (an *armed* entry), so a replay, in any process, waits for
the same moment rather than starting the clock again. It then stays in memory for
``suspend_after`` seconds, since answers often come quickly; after that, with no step in
flight, the run is *released*: status ``waiting``, wake time and event names stored, coroutine
dropped. Any worker replays it when the timer fires, the event arrives or the child ends, and
the replayed wait picks up where the released one stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import EventTimeout, WorkflowCancelled
from .failures import describe_error, rebuild_error
from .journal import Recorder, armed, done
from .signals import Suspended
from .store.base import COMPLETED, ERROR, OK, TERMINAL, Entry, RunRecord, child_event_name

_TIMEOUT = object()
#: loop turns granted to sibling branches (gather, wait_first) to register their own waits
#: or settle a race before the run is released
_SETTLE_TURNS = 4


async def sleep(rec: Recorder, seq: int, until: float | None, seconds: float) -> None:
    """Sleep until ``until`` (epoch seconds) or for ``seconds`` from the first execution."""
    entry = rec.recorded(seq, "sleep", "sleep")
    if entry is not None:
        wake_at = float(await rec.value(entry))
        if entry.status == OK:
            return
    else:
        wake_at = until if until is not None else time.time() + seconds
        await rec.commit(armed(seq, "sleep", "sleep", rec.codec.encode(wake_at)))
    await block(rec, seq, None, wake_at)
    rec.buffer(seq, "sleep", "sleep", rec.codec.encode(wake_at))


async def wait_for_event(rec: Recorder, seq: int, name: str, seconds: float | None) -> Any:
    """The payload of the next event ``name`` sent to the run (``EventTimeout`` on expiry)."""
    deadline: float | None = None
    entry = rec.recorded(seq, "event", name)
    if entry is not None:
        value = await rec.value(entry)
        if entry.status == OK:
            return value
        if entry.status == ERROR:
            raise rebuild_error(value)
        deadline = float(value)
    elif seconds is not None:
        deadline = time.time() + seconds
        await rec.commit(armed(seq, "event", name, rec.codec.encode(deadline)))
    payload = await block(rec, seq, name, deadline, functools.partial(_take_event, rec, seq, name))
    if payload is _TIMEOUT:
        exc = EventTimeout(f"no event {name!r} arrived within {seconds} s")
        await rec.commit(done(seq, "event", name, ERROR, describe_error(exc, rec.codec)))
        raise exc
    return rec.codec.decode(payload)


async def _take_event(rec: Recorder, seq: int, name: str) -> bytes | None:
    """Consume the oldest stored event ``name`` and journal it, in one transaction."""
    pending = rec.take_pending()
    if pending:
        await rec.write(pending)
    now = time.time()
    run = rec.run
    return await rec.store.take_event(
        run.run_id, run.epoch, name, Entry(seq, "event", name, OK, None, None, 1, now, now)
    )


async def join(rec: Recorder, seq: int, kind: str, name: str, child_id: str) -> Any:
    """Wait (durably) for the child run ``child_id`` to end; journal and return its outcome."""
    store = rec.store

    async def finished() -> RunRecord | None:
        child = await store.get_run(child_id)
        return child if child is not None and child.status in TERMINAL else None

    child: RunRecord = await block(rec, seq, child_event_name(child_id), None, finished)
    now = time.time()
    if child.status == COMPLETED:
        await rec.commit(Entry(seq, kind, name, OK, child.output, None, 1, now, now))
        return None if child.output is None else rec.codec.decode(child.output)
    error = child.error or describe_error(WorkflowCancelled(), rec.codec)
    await rec.commit(Entry(seq, kind, name, ERROR, error, None, 1, now, now))
    raise rebuild_error(rec.codec.decode(error))


async def block(
    rec: Recorder,
    seq: int,
    event: str | None,
    deadline: float | None,
    poll: Callable[[], Awaitable[Any]] | None = None,
) -> Any:
    """Wait until ``poll()`` returns something (an event, a finished child) or the deadline
    passes (returns _TIMEOUT).

    The wait stays in memory for ``suspend_after`` seconds; after that, with no step in
    flight, the run is released and its coroutine dropped. A pure timer longer than that is
    released at once."""
    rec.waits[seq] = (event, deadline)
    started = time.monotonic()
    budget = rec.host.suspend_after
    settled = False  # let parallel branches register their waits before suspending
    try:
        while True:
            rec.raise_if_cancelled()
            if rec.closed:
                raise Suspended()
            if poll is not None:
                got = await poll()
                if got is not None:
                    return got
            now = time.time()
            if deadline is not None and now >= deadline:
                return _TIMEOUT
            left = math.inf if deadline is None else deadline - now
            linger = 0.0 if poll is None else budget - (time.monotonic() - started)
            if left > budget and linger <= 0 and rec.inflight == 0:
                if not settled:
                    settled = True
                    for _ in range(_SETTLE_TURNS):
                        await asyncio.sleep(0)
                    continue
                await suspend(rec)
                raise Suspended()
            rec.wakeup.clear()
            timeout = min(left, linger if linger > 0 else max(budget, 0.001))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rec.wakeup.wait(), timeout)
    finally:
        rec.waits.pop(seq, None)


async def suspend(rec: Recorder) -> None:
    """Release the run: status waiting, the earliest deadline and every awaited event stored,
    the buffered values written with it; then close this execution."""
    run = rec.run
    deadlines = [d for _, d in rec.waits.values() if d is not None]
    if run.deadline is not None:
        deadlines.append(run.deadline)
    events = [e for e, _ in rec.waits.values() if e is not None]
    rec.closed = True
    await rec.store.suspend_run(
        run.run_id,
        run.epoch,
        wake_at=min(deadlines) if deadlines else None,
        wait_events=events,
        pending=rec.take_pending(),
        now=time.time(),
    )
    rec.wakeup.set()


async def wait_first(
    rec: Recorder, seq: int, awaitables: tuple[Awaitable[Any], ...]
) -> tuple[int, Any]:
    """The first of several journaled calls to finish (index, result); the others are
    cancelled. The winner is journaled, so replay picks the same one."""
    entry = rec.recorded(seq, "race", "wait_first")
    if entry is not None:
        winner = int(rec.inline_value(entry))
        for i, aw in enumerate(awaitables):
            if i != winner and inspect.iscoroutine(aw):
                aw.close()
        return winner, await awaitables[winner]
    tasks = [asyncio.ensure_future(aw) for aw in awaitables]
    try:
        finished, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
    winner = min(tasks.index(t) for t in finished)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # mark retrieved
    await asyncio.gather(*tasks, return_exceptions=True)
    rec.buffer(seq, "race", "wait_first", rec.codec.encode(winner))
    return winner, tasks[winner].result()
