"""Real worker processes sharing one schedule (every second), on a SQLite file and on
PostgreSQL: one run per tick while two workers run, not one tick skipped; then both stop, ticks
come due with no worker, and the one worker started afterwards applies the missed-tick policy
(``catch_up``, at most two).

Nothing sleeps to synchronise: the test waits for a worker's banner, or for runs in the
database, re-checked whenever the store reports a change (SQLite's data_version, PostgreSQL's
LISTEN) up to a deadline. The one wait on the clock is the outage itself: ticks must come due
while no worker runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_helpers import WorkerProcess, fresh_database

from undying import App
from undying.store.base import COMPLETED, RunFilter

APP = "schedule_worker_app:app"
MAX_CATCH_UP = 2


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "schedules.db")
        return
    with fresh_database() as pg_url:
        yield pg_url


def tick_of(run_id: str) -> float:
    stamp = run_id.rsplit("~tick-", 1)[1]
    return dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC).timestamp()


async def completed_ticks(url: str, *, after: float, count: int, timeout: float) -> list[float]:
    """Wait until ``count`` tick runs after ``after`` completed; every tick run there is."""
    async with App(url, worker=False) as client:
        deadline = time.monotonic() + timeout
        while True:
            runs = await client.store.list_runs(RunFilter(limit=10_000))
            done = [tick_of(r.run_id) for r in runs if r.status == COMPLETED]
            if len([t for t in done if t > after]) >= count:
                return sorted(tick_of(r.run_id) for r in runs)
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"{count} ticks after {after} did not complete: {sorted(done)}")
            await client.wait_for_change(min(left, 0.5))


async def all_ticks(url: str) -> list[float]:
    async with App(url, worker=False) as client:
        runs = await client.store.list_runs(RunFilter(limit=10_000))
    return sorted(tick_of(r.run_id) for r in runs)


async def clock_passes(url: str, t: float) -> None:
    """Until the wall clock passes ``t``: the outage, during which ticks come due."""
    async with App(url, worker=False) as client:
        while time.time() <= t:
            await client.wait_for_change(t - time.time())


def workers(url: str, log_dir: Path, count: int, env: dict[str, str]) -> list[WorkerProcess]:
    started = [WorkerProcess(url, log_dir, i, env, app=APP) for i in range(count)]
    for worker in started:
        worker.wait_ready()
    return started


def test_two_workers_one_run_per_tick_then_the_missed_policy(url: str, tmp_path: Path) -> None:
    effects = tmp_path / "effects.log"
    effects.touch()
    env = {
        "SCHED_EFFECTS": str(effects),
        "SCHED_MISSED": "catch_up",
        "SCHED_MAX_CATCH_UP": str(MAX_CATCH_UP),
    }
    both = workers(url, tmp_path, 2, env)
    try:
        both_ready = time.time()
        ticks = asyncio.run(completed_ticks(url, after=both_ready, count=6, timeout=30))
        for worker in both:
            code, _ = worker.terminate_gracefully()
            assert code == 0, worker.stderr()
    finally:
        for worker in both:
            worker.cleanup()
    # One run per tick while they ran, not one skipped, each executed once.
    assert ticks == [ticks[0] + i for i in range(len(ticks))], ticks
    executions = Counter(line.split()[0] for line in effects.read_text().splitlines())
    assert set(executions.values()) == {1}, executions
    last_before = asyncio.run(all_ticks(url))[-1]  # a tick may have fired while they stopped

    asyncio.run(clock_passes(url, last_before + 5))  # five ticks come due with no worker

    [alone] = workers(url, tmp_path, 1, env)
    try:
        restarted = time.time()
        ticks = asyncio.run(completed_ticks(url, after=restarted, count=3, timeout=30))
    finally:
        alone.cleanup()
    since = [t for t in ticks if t > last_before]
    # catch_up, at most two: the last two ticks that came due before the worker started
    # ran, the older ones of the outage did not, and every tick since did.
    assert since == [since[0] + i for i in range(len(since))], since
    assert since[0] - last_before >= 4, (last_before, since)  # at least three were not run
    latest_missed = since[0] + MAX_CATCH_UP - 1
    assert latest_missed in (float(int(restarted)) - 1, float(int(restarted))), (restarted, since)
    executions = Counter(line.split()[0] for line in effects.read_text().splitlines())
    assert set(executions.values()) == {1}, executions
