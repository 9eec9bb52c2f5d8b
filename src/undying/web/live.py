"""Live pages: one watcher of the store for the whole server, and server-sent events.

A store's ``wait_for_activity`` is made for one waiter (SQLite compares ``PRAGMA
data_version`` with the last value it saw; PostgreSQL and memory clear one flag), so every
open page waiting on it directly would steal wake-ups from the others. (The feed waits on
``wait_for_activity`` rather than ``wait_for_change`` because stream appends wake it too: the
run page shows a run's streams live, and PostgreSQL announces appends apart.)
``ChangeFeed`` is the single waiter: it turns each change into a new *ticket* every stream
can wait on. A stream takes its ticket before it reads, so a change made while it renders is
never missed.

Writes made through this process's own App (the action buttons) do not wake its own store
(a store ignores its own commits), so the actions ``bump`` the feed themselves.

Each stream re-renders its fragment when woken and sends it only if it changed, at most
``MAX_RATE`` times a second, and at least every ``REFRESH`` seconds (durations of running
steps move on even when nothing is written).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from ..store.base import ReadSide

log = logging.getLogger("undying.web")

#: how long the feed's one wait on the store lasts before it simply waits again
FEED_WAIT = 5.0
#: a stream re-renders at least this often (seconds), changed or not
REFRESH = 5.0
#: at most this many updates a second per stream, however fast the run writes
MAX_RATE = 5.0

#: a stream's renderer: (html, finished). A finished stream sends its last update and ends.
Render = Callable[[], Awaitable[tuple[str, bool]]]


class ChangeFeed:
    """Fans the store's change notifications out to every open stream."""

    def __init__(self, reads: ReadSide) -> None:
        self._reads = reads
        self._ticket = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: set when the server shuts down: every stream ends, so none holds the shutdown up
        self.closed = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.ensure_future(self._watch())

    def close_threadsafe(self) -> None:
        """End every stream; callable from a signal handler or another thread."""
        self.closed = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.bump)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.closed = True
        self.bump()  # streams still waiting wake and end

    async def _watch(self) -> None:
        while True:
            try:
                changed = await self._reads.wait_for_activity(FEED_WAIT)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broken connection: the store reconnects by itself
                log.warning("watching the store for changes failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
                changed = True
            if changed:
                self.bump()

    def ticket(self) -> asyncio.Event:
        """Set at the next change after this call."""
        return self._ticket

    def bump(self) -> None:
        ticket, self._ticket = self._ticket, asyncio.Event()
        ticket.set()


def sse_message(event: str, data: str) -> str:
    """One server-sent event; each line of ``data`` gets its own ``data:`` field."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {event}\n{lines}\n"


async def stream_updates(feed: ChangeFeed, render: Render) -> AsyncIterator[str]:
    """The events of one live page: its fragment each time it changes, then ``end``."""
    last: str | None = None
    yield "retry: 2000\n\n"
    while True:
        ticket = feed.ticket()
        html, finished = await render()
        if html != last:
            yield sse_message("update", html)
            last = html
        else:
            yield ": still here\n\n"  # keeps proxies from closing an idle stream
        if finished:
            yield sse_message("end", "")
            return
        woke = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ticket.wait(), REFRESH)
        if feed.closed:  # the server is stopping; the browser reconnects to the next one
            return
        pause = 1.0 / MAX_RATE - (time.monotonic() - woke)
        if pause > 0:  # a rate limit, not a synchronization: changes meanwhile are coalesced
            await asyncio.sleep(pause)
