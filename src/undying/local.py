"""Runs executing in this process, as their handles see them: no query, no polling.

A worker that executes a run here tells ``LocalRuns`` how it ended, and a ``RunHandle`` in the
same process awaiting that run gets the outcome from a future instead of reading the
database. A run released or lost here resolves its future with None: its handle then follows
it through the database, where it may end in another process. Status values a run publishes
are cached here too, fresher than the database.
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

    def reset(self) -> None:
        """Start afresh (futures and events belong to one event loop)."""
        self.results = {}
        self.status = {}
        self._changed = asyncio.Event()

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
        """Something may have changed: wake whoever waits for a change."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_changed(self, timeout: float) -> None:
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)
