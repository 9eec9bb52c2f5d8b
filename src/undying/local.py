"""Runs executing in this process, as their handles see them: no query, no polling.

A worker that executes a run here tells ``LocalRuns`` how it ended, and a ``RunHandle`` in the
same process awaiting that run gets the outcome from a future instead of reading the
database. A run released or lost here resolves its future with None: its handle then follows
it through the database, where it may end in another process. Status values a run publishes
are cached here too, fresher than the database. Stream readers wait on a signal of their own
(``stream_ticket``), so a run publishing tokens does not wake every handle.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

#: how a run ended: (status, encoded output, encoded error)
Ending = tuple[str, bytes | None, bytes | None]


class LocalRuns:
    """Outcome futures, published status values and a change signal, for one App."""

    def __init__(self) -> None:
        self.results: dict[str, asyncio.Future[Ending | None]] = {}
        self.status: dict[str, Any] = {}
        self._changed = asyncio.Event()
        self._published = asyncio.Event()

    def reset(self) -> None:
        """Start afresh (futures and events belong to one event loop)."""
        self.results = {}
        self.status = {}
        self._changed = asyncio.Event()
        self._published = asyncio.Event()

    def expect(self, run_id: str) -> None:
        """A run is about to execute here: its handles may wait on its outcome."""
        self.results[run_id] = asyncio.get_running_loop().create_future()

    def ended(self, run_id: str, ending: Ending) -> None:
        """The run ended in this process."""
        self.stopped(run_id, ending)
        self.changed()

    def stopped(self, run_id: str, ending: Ending | None = None) -> None:
        """The run stopped executing here: handles get ``ending``, or None when it was
        released or lost and must be followed through the database."""
        future = self.results.pop(run_id, None)
        if future is not None and not future.done():
            future.set_result(ending)
        self.status.pop(run_id, None)

    def changed(self) -> None:
        """Something may have changed: wake whoever waits for a change (stream readers too:
        a run that ended ended its streams)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        self.published()

    def published(self) -> None:
        """A stream may have grown or ended: wake the stream readers."""
        published, self._published = self._published, asyncio.Event()
        published.set()

    def stream_ticket(self) -> asyncio.Event:
        """Set at the next ``published`` (or ``changed``) after this call: a reader takes it
        before it reads, so an append made while it reads is never missed."""
        return self._published

    async def wait_changed(self, timeout: float) -> None:
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)
