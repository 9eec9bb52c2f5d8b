"""Schedules: ticks computed from a definition alone, the missed-tick policies, every bad
definition refused at decoration time, and real workers firing ticks (apps on one
``memory://NAME`` database stand for worker processes; the acceptance suite has real ones)."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator
from zoneinfo import ZoneInfo

import pytest

from undying import App, Context, InvalidArgument
from undying.schedules import (
    Schedule,
    handled_through,
    make_schedule,
    missed_ticks,
    next_tick,
)
from undying.store.base import ScheduleRecord
from undying.store.memory import drop_database
from undying.testing import eventually, temp_app

PARIS = ZoneInfo("Europe/Paris")


def every(seconds: int, missed: str = "latest", **fields: object) -> Schedule:
    return make_schedule("s", "wf", every=seconds, missed=missed, **fields)  # type: ignore[arg-type]


def at(*args: int, tz: dt.tzinfo = dt.UTC) -> float:
    return dt.datetime(*args, tzinfo=tz).timestamp()  # type: ignore[misc]


# -- ticks ---------------------------------------------------------------------------------------
def test_interval_ticks_are_multiples_of_the_interval_since_the_epoch() -> None:
    s = every(300)
    t = at(2026, 12, 2, 16, 7, 30)
    assert s.next_after(t) == at(2026, 12, 2, 16, 10)
    assert s.next_after(at(2026, 12, 2, 16, 10)) == at(2026, 12, 2, 16, 15)  # strictly after
    assert s.latest_at_or_before(at(2026, 12, 2, 16, 10)) == at(2026, 12, 2, 16, 10)
    assert s.ticks_between(t, t + 900) == [at(2026, 12, 2, 16, m) for m in (10, 15, 20)]
    assert s.run_id(at(2026, 12, 2, 16, 10)) == "s~tick-20261202T161000Z"


def test_cron_ticks_follow_the_zone_through_daylight_saving() -> None:
    s = make_schedule("s", "wf", "30 2 * * *", timezone="Europe/Paris")
    # 2026-03-29: Paris skips 02:00-03:00; the tick happens at the jump, then 02:30 again.
    before = at(2026, 3, 28, 12, 0, tz=PARIS)
    ticks = s.ticks_between(before, before + 3 * 86400)
    assert [dt.datetime.fromtimestamp(t, PARIS).strftime("%d %H:%M") for t in ticks] == [
        "29 03:00",
        "30 02:30",
        "31 02:30",
    ]
    five = make_schedule("s", "wf", "*/5 * * * *", timezone="Europe/Paris")
    t = at(2026, 12, 2, 16, 5, tz=PARIS)
    assert five.next_after(t) == t + 300
    assert five.latest_at_or_before(t + 299) == t
    assert five.run_id(t) == "s~tick-20261202T150500Z"  # ids are in UTC


def test_missed_policies_pick_none_the_latest_or_the_latest_few() -> None:
    t0 = at(2026, 12, 2, 0, 0)
    assert missed_ticks(every(60, "skip"), t0, t0 + 600) == []
    assert missed_ticks(every(60, "latest"), t0, t0 + 630) == [t0 + 600]
    assert missed_ticks(every(60, "latest"), t0, t0 + 30) == []  # nothing missed
    catch_up = every(60, "catch_up", max_catch_up=3)
    assert missed_ticks(catch_up, t0, t0 + 600) == [t0 + 480, t0 + 540, t0 + 600]
    assert missed_ticks(catch_up, t0, t0 + 120) == [t0 + 60, t0 + 120]  # after is excluded
    # The default bound, and a week-long outage costs the bound, not a step per tick.
    assert len(missed_ticks(every(1, "catch_up"), t0, t0 + 7 * 86400)) == 10


def test_a_stored_schedule_counts_missed_ticks_from_its_last_tick_resume_or_birth() -> None:
    record = ScheduleRecord("s", "wf", None, 60.0, None, "latest", created_at=100.0)
    assert handled_through(record) == 100.0
    record.last_tick = 500.0
    assert handled_through(record) == 500.0
    record.resumed_at = 900.0
    assert handled_through(record) == 900.0
    assert next_tick(record, 1000.0) == 1020.0
    record.paused = True
    assert next_tick(record, 1000.0) is None


# -- bad definitions -------------------------------------------------------------------------------
def workflow_app() -> App:
    return App("memory://", strict=True)


async def job(ctx: Context, tick: dt.datetime) -> None:
    return None


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("* * *",), {}, "malformed cron expression '\\* \\* \\*': use five fields"),
        (("61 * * * *",), {}, "malformed cron expression '61 \\* \\* \\* \\*' \\("),
        (("every five minutes",), {}, "malformed cron expression"),
        (("0 0 * * * *",), {}, "five fields .* for intervals under a minute use every="),
        (("*/0 * * * *",), {}, "malformed cron expression"),
        ((42,), {}, "a cron expression is a string"),
        (("*/5 * * * *",), {"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        (("*/5 * * * *",), {"timezone": "../etc/passwd"}, "unknown time zone"),
        (("*/5 * * * *",), {"every": 60}, "either a cron expression .* not both"),
        ((), {}, "either a cron expression .* not neither"),
        ((), {"every": 0}, "every= must be positive"),
        ((), {"every": dt.timedelta(seconds=-5)}, "every= must be positive"),
        ((), {"every": 1.5}, "whole number of seconds >= 1"),
        ((), {"every": dt.timedelta(milliseconds=100)}, "whole number of seconds >= 1"),
        ((), {"every": "5m"}, "every= takes a timedelta"),
        ((), {"every": 60, "timezone": "Europe/Paris"}, "timezone= is for cron expressions"),
        ((), {"every": 60, "missed": "all"}, "missed must be one of 'skip', 'latest'"),
        ((), {"every": 60, "max_catch_up": 5}, "max_catch_up bounds missed='catch_up'"),
        ((), {"every": 60, "missed": "catch_up", "max_catch_up": 0}, "whole number >= 1"),
        ((), {"every": 60, "name": "has~tilde"}, "'~' is reserved.*pass name="),
        ((), {"every": 60, "name": ""}, "malformed run id"),
        ((), {"every": 60, "queue": "nope"}, "unknown queue 'nope'"),
        ((), {"every": 60, "priority": "high"}, "priority must be an int"),
    ],
)
def test_bad_definitions_are_refused_when_declared(
    args: tuple[object, ...], kwargs: dict[str, object], message: str
) -> None:
    app = workflow_app()
    with pytest.raises(InvalidArgument, match=message):
        app.schedule(*args, **kwargs)(job)  # type: ignore[arg-type, call-overload]
    assert app.registry.schedules == {}


def test_a_scheduled_workflow_must_take_the_tick() -> None:
    app = workflow_app()

    async def no_tick(ctx: Context) -> None:
        return None

    with pytest.raises(InvalidArgument, match=r"called as fn\(ctx, tick\)"):
        app.schedule(every=60, name="no-tick")(no_tick)
    assert app.registry.workflows == {}  # refused whole: not registered as a workflow either


def test_schedules_are_declared_before_the_worker_starts(run: Callable[..., object]) -> None:
    app = workflow_app()

    async def main() -> None:
        async with app:
            with pytest.raises(InvalidArgument, match="before `async with app:`"):
                app.schedule(every=60, name="late")(job)

    run(main())


def test_scheduling_registers_the_workflow_or_takes_one() -> None:
    app = workflow_app()
    decorated = app.schedule("0 9 * * mon-fri", timezone="Europe/Paris", name="daily")(job)
    assert decorated is job and app.registry.name_of(job) in app.registry.workflows
    assert app.schedule(every=dt.timedelta(hours=1), name="hourly", workflow=job) == "hourly"
    name = app.registry.name_of(job)
    assert app.schedule(every=60, workflow=name) == name  # named after its workflow
    assert sorted(app.registry.schedules) == sorted(["daily", "hourly", name])
    with pytest.raises(InvalidArgument, match="two schedules are named 'daily'"):
        app.schedule(every=60, name="daily", workflow=job)


# -- workers firing ticks ---------------------------------------------------------------------
@pytest.fixture
def shared_db() -> Iterator[str]:
    name = f"schedules-{uuid.uuid4().hex[:12]}"
    yield f"memory://{name}"
    drop_database(name)


def beating_app(url: str, ran: list[tuple[str, str]], **schedule: object) -> App:
    """An app whose schedule ``beat`` (every second) records (run id, tick) per execution."""
    app = temp_app(url, lease_ttl=3.0)

    @app.schedule(every=1, name="beat", **schedule)  # type: ignore[call-overload]
    @app.workflow(name="beat.wf")
    async def beat(ctx: Context, tick: dt.datetime) -> str:
        ran.append((ctx.run_id, tick.isoformat()))
        return tick.isoformat()

    return app


def tick_of(run_id: str) -> float:
    stamp = run_id.rsplit("~tick-", 1)[1]
    return dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC).timestamp()


async def tick_runs(app: App) -> list[float]:
    return sorted(tick_of(r.run_id) for r in await app.list_runs(limit=1000))


async def clock_passes(app: App, t: float) -> None:
    """Until the wall clock passes ``t`` (the time a tick comes due: what is under test)."""
    await eventually(app, lambda: time.time() > t, timeout=t - time.time() + 5, what=f"t={t}")


def test_two_workers_fire_each_tick_once_and_pass_it_the_tick(
    shared_db: str, run: Callable[..., object]
) -> None:
    ran: list[tuple[str, str]] = []
    apps = [beating_app(shared_db, ran) for _ in range(2)]

    async def main() -> list[float]:
        async with apps[0], apps[1]:
            started = time.time()

            async def four_ticks() -> bool:
                return len([t for t in await tick_runs(apps[0]) if t > started]) >= 4

            await eventually(apps[0], four_ticks, timeout=15, what="four ticks")
            await eventually(apps[0], lambda: len(ran) >= 4, what="four executions")
            return await tick_runs(apps[0])

    ticks = run(main())
    assert ticks == [ticks[0] + i for i in range(len(ticks))]  # one run per tick, none skipped
    for run_id, tick in ran:  # each run got its own tick's time
        assert dt.datetime.fromisoformat(tick).timestamp() == tick_of(run_id)
    assert len({run_id for run_id, _ in ran}) == len(ran)  # executed once each


@pytest.mark.parametrize(("missed", "expected"), [("skip", 0), ("latest", 1), ("catch_up", 3)])
def test_a_worker_starting_after_an_outage_applies_the_missed_policy(
    shared_db: str, run: Callable[..., object], missed: str, expected: int
) -> None:
    ran: list[tuple[str, str]] = []
    extra = {"max_catch_up": 3} if missed == "catch_up" else {}

    async def main() -> tuple[float, float, list[float]]:
        first = beating_app(shared_db, ran, missed=missed, **extra)
        async with first:
            await eventually(first, lambda: len(ran) >= 1, timeout=10, what="a first tick")
        async with temp_app(shared_db, worker=False) as client:
            [state] = await client.list_schedules()
            assert state.last_tick is not None
            await clock_passes(client, time.time() + 5)  # ticks come due, no worker runs
        second = beating_app(shared_db, ran, missed=missed, **extra)
        async with second:
            restarted = time.time()
            await eventually(
                second,
                lambda: any(tick_of(r) > restarted + 1 for r, _ in ran),
                timeout=10,
                what="ticks after the restart",
            )
            return state.last_tick, restarted, await tick_runs(second)

    last_fired, restarted, ticks = run(main())
    since = [t for t in ticks if t > last_fired]
    assert since == [since[0] + i for i in range(len(since))]  # then not one tick skipped
    assert since[0] - last_fired >= 3  # the outage's ticks did not all run
    # The worker started at `restarted` (or a hair later: the next second, rarely): the
    # policy ran the `expected` latest ticks due by then, and every tick since.
    latest_due = since[0] + expected - 1
    assert latest_due in (float(int(restarted)), float(int(restarted)) + 1)


def test_pause_and_resume_from_the_app(shared_db: str, run: Callable[..., object]) -> None:
    ran: list[tuple[str, str]] = []
    worker = beating_app(shared_db, ran)
    client = temp_app(shared_db, worker=False)

    async def main() -> tuple[float, float, list[float]]:
        async with worker, client:
            await eventually(worker, lambda: len(ran) >= 1, timeout=10, what="a first tick")
            assert await client.pause_schedule("beat") is True
            assert await client.pause_schedule("beat") is False
            paused = time.time()
            [state] = await client.list_schedules()
            assert state.paused
            await clock_passes(worker, paused + 2.5)  # two ticks come due while paused
            assert await client.resume_schedule("beat") is True
            [state] = await client.list_schedules()
            assert not state.paused and state.resumed_at is not None
            resumed = state.resumed_at  # ticks up to this instant never run
            await eventually(
                worker,
                lambda: any(tick_of(r) > resumed for r, _ in ran),
                timeout=10,
                what="a tick after the resume",
            )
            with pytest.raises(InvalidArgument, match="no schedule named 'nope' \\(known: beat\\)"):
                await client.pause_schedule("nope")
            return paused, resumed, await tick_runs(worker)

    paused, resumed, ticks = run(main())
    assert not [t for t in ticks if paused < t <= resumed]  # nothing ran while paused
    assert next(t for t in ticks if t > resumed) == float(int(resumed)) + 1


def test_a_client_can_pause_a_schedule_no_worker_registered_yet(
    run: Callable[..., object],
) -> None:
    client = App("memory://", worker=False)
    client.schedule(every=60, name="later")(job)

    async def main() -> list[ScheduleRecord]:
        async with client:
            assert await client.pause_schedule("later") is True
            return await client.list_schedules()

    [state] = run(main())
    assert (state.name, state.paused, state.every) == ("later", True, 60.0)


def test_a_scheduled_run_goes_to_its_queue(shared_db: str, run: Callable[..., object]) -> None:
    app = temp_app(shared_db)
    app.queue("cron-jobs", concurrency=1)
    ran: list[str] = []

    @app.schedule(every=1, name="queued", queue="cron-jobs", priority=5)
    async def queued(ctx: Context, tick: dt.datetime) -> None:
        ran.append(ctx.run_id)

    async def main() -> None:
        async with app:
            await eventually(app, lambda: len(ran) >= 2, timeout=10, what="two queued ticks")
            runs = await app.list_runs()
            assert {(r.queue, r.priority) for r in runs} == {("cron-jobs", 5)}

    run(main())


def test_an_unknown_schedule_name_is_refused(run: Callable[..., object]) -> None:
    app = App("memory://", worker=False)

    async def main() -> None:
        async with app:
            for bad in ("", 42):
                with pytest.raises(InvalidArgument, match="a schedule name"):
                    await app.resume_schedule(bad)  # type: ignore[arg-type]
            with pytest.raises(InvalidArgument, match="known: none yet"):
                await app.resume_schedule("ghost")

    run(main())


def test_ticks_run_in_a_loop_that_sleeps_until_the_next_one(run: Callable[..., object]) -> None:
    """Between ticks the ticker makes no store call at all (it sleeps, it does not poll)."""
    app = App("memory://", lease_ttl=3.0)
    calls: list[str] = []

    @app.schedule(every=10**7, name="rarely")
    async def rarely(ctx: Context, tick: dt.datetime) -> None:
        return None

    async def main() -> None:
        async with app:

            async def registered() -> bool:
                return bool(await app.list_schedules())

            await eventually(app, registered, what="the schedule registered")
            store = app._store_or_raise()
            for method in ("fire_tick", "register_schedules", "list_schedules"):
                original = getattr(store, method)

                def spy(*a: object, _m: str = method, _o: object = original, **k: object) -> object:
                    calls.append(_m)
                    return _o(*a, **k)  # type: ignore[operator]

                setattr(store, method, spy)
            deadline = time.time() + 1.0
            await eventually(app, lambda: time.time() > deadline, timeout=5, what="a second")

    run(main())
    assert calls == []
