"""The worker's ticker: fires its app's schedules on time, in every worker at once.

Every worker that knows a schedule fires each of its ticks; the tick's run id is derived from
the schedule and the tick, so the first worker creates the run (and executes it, unless it
goes to a queue) and the others find it there: one run per tick however many workers run, and
no tick is lost while any of them runs. Between ticks the ticker sleeps until the next one,
computed from the definitions alone; it never polls the database.

Missed ticks. A tick is *missed* when it came due while this worker was not watching: before
it started (counted from the stored latest tick fired, the last resume, or the schedule's
registration), or while it was stalled for longer than a lease (a worker frozen past its lease
counts as dead for its runs, and so for its ticks). The schedule's ``missed`` policy decides
which of those run (``schedules.missed_ticks``); a tick that another worker, watching at the
time, fires anyway is idempotent. Ticks that come due while a schedule is paused never run:
the store refuses to fire them, in the transaction that would create their run, and a resume
is noted so that a worker starting later does not count them as missed either.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from . import observe
from .codec import Codec
from .schedules import Schedule, handled_through, missed_ticks, tick_time
from .store.base import NewRun, RunRecord, Store, retry_transient

log = logging.getLogger("undying.ticker")


class Ticker:
    """Fires ``schedules`` for one worker (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        schedules: Sequence[Schedule],
        *,
        codec: Codec,
        worker_id: str,
        lease_ttl: float,
        retry_pause: float,
        spawn: Callable[[RunRecord], None],
        poke: Callable[[], None],
    ) -> None:
        self.store = store
        self.schedules = list(schedules)
        self.codec = codec
        self.worker_id = worker_id
        self.lease_ttl = lease_ttl
        self.retry_pause = retry_pause
        self.spawn = spawn
        self.poke = poke
        #: per schedule, the time up to which this worker has dealt with its ticks
        self.through: dict[str, float] = {}

    async def run(self) -> None:
        """Register the schedules, fire what was missed per policy, then every tick on time
        until cancelled."""
        if not self.schedules:
            return
        await self._start()
        while True:
            wake = min(s.next_after(self.through[s.name]) for s in self.schedules)
            delay = wake - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.time()
            if now < wake:  # the wall clock went back while we slept: sleep again
                continue
            stalled = now - wake > self.lease_ttl
            try:
                for schedule in self.schedules:
                    await self._fire_due(schedule, now, stalled=stalled)
            except Exception:
                log.exception("firing schedule ticks failed; retrying")
                await asyncio.sleep(self.retry_pause)

    async def _start(self) -> None:
        while True:
            try:
                await self._catch_up(time.time())
                return
            except Exception:
                log.exception("registering schedules failed; retrying")
                await asyncio.sleep(self.retry_pause)

    async def _catch_up(self, started: float) -> None:
        """Register the schedules and fire, per policy, the ticks missed before ``started``."""
        definitions = [s.record() for s in self.schedules]
        stored = await retry_transient(
            lambda: self.store.register_schedules(definitions, started), "registering schedules"
        )
        by_name = {record.name: record for record in stored}
        for schedule in self.schedules:
            after = handled_through(by_name[schedule.name])
            self.through.setdefault(schedule.name, min(after, started))
            await self._fire_due(schedule, started, stalled=True)

    async def _fire_due(self, schedule: Schedule, now: float, *, stalled: bool) -> None:
        """Fire the schedule's ticks up to ``now``: all of them while this worker watched,
        those its policy picks after it did not (``stalled``)."""
        after = self.through[schedule.name]
        if stalled:
            ticks = missed_ticks(schedule, after, now)
        else:
            ticks = schedule.ticks_between(after, now)
        for tick in ticks:
            await self._fire(schedule, tick)
            self.through[schedule.name] = tick  # a failure retries from the next one
        self.through[schedule.name] = now

    async def _fire(self, schedule: Schedule, tick: float) -> None:
        encoded = self.codec.encode(
            observe.pack_input([tick_time(tick)], {}, observe.carry()), root="the tick"
        )
        run = NewRun(
            schedule.run_id(tick),
            schedule.workflow,
            encoded,
            queue=schedule.queue,
            priority=schedule.priority,
        )
        here = schedule.queue is None  # a queued run waits to be claimed under its limits
        now = time.time()
        created = await retry_transient(
            lambda: self.store.fire_tick(
                schedule.name,
                tick,
                run,
                owner=self.worker_id if here else None,
                lease_expires=now + self.lease_ttl,
                now=now,
            ),
            f"firing schedule {schedule.name!r}",
        )
        if created is None:
            return
        log.info("schedule %r: tick %s started run %r", schedule.name, tick_time(tick), run.run_id)
        if here:
            self.spawn(created)
        else:
            self.poke()
