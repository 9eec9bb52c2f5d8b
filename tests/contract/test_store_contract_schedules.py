"""The storage contract for schedules, per-key concurrency and deduplicated starts, on every
store (see conftest). Several open stores on one database stand for several workers."""

from __future__ import annotations

import asyncio

from store_helpers import LEASE, NOW, MakeStore, claim, new_run, opened, run

from undying.store.base import COMPLETED, RUNNING, QueueLimits, ScheduleRecord, Store


def definition(name: str = "nightly", **fields: object) -> ScheduleRecord:
    values: dict[str, object] = {
        "workflow": "wf",
        "cron": None,
        "every": 60.0,
        "timezone": None,
        "missed": "latest",
    }
    values.update(fields)
    return ScheduleRecord(name=name, **values)  # type: ignore[arg-type]


async def fire(store: Store, tick: float, name: str = "nightly", owner: str | None = "w1") -> bool:
    record = await store.fire_tick(
        name,
        tick,
        new_run(f"{name}~tick-{int(tick)}"),
        owner=owner,
        lease_expires=LEASE,
        now=NOW,
    )
    return record is not None


# -- schedules ------------------------------------------------------------------------------------
def test_registering_keeps_the_state_and_replaces_the_definition(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1", "w2") as (a, b):
            [stored] = await a.register_schedules([definition()], NOW)
            assert (stored.paused, stored.last_tick, stored.resumed_at) == (False, None, None)
            assert stored.created_at == NOW
            assert await fire(a, NOW)
            assert await a.set_schedule_paused("nightly", True, NOW + 1) is True
            # Another worker starts with a newer definition: the state stays.
            [again] = await b.register_schedules(
                [definition(cron="*/5 * * * *", every=None, timezone="Europe/Paris")], NOW + 2
            )
            assert (again.cron, again.every, again.timezone) == (
                "*/5 * * * *",
                None,
                "Europe/Paris",
            )
            assert (again.paused, again.last_tick, again.created_at) == (True, NOW, NOW)
            assert again.updated_at == NOW + 2
            await b.register_schedules([definition("alpha")], NOW)
            assert [s.name for s in await a.list_schedules()] == ["alpha", "nightly"]

    run(body())


def test_a_tick_creates_one_run_whichever_workers_fire_it(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1", "w2") as (a, b):
            await a.register_schedules([definition()], NOW)
            firsts = await asyncio.gather(
                fire(a, NOW + 60, owner="w1"), fire(b, NOW + 60, owner="w2")
            )
            assert sorted(firsts) == [False, True]
            assert not await fire(a, NOW + 60)  # again, later: it exists
            created = await b.get_run(f"nightly~tick-{int(NOW + 60)}")
            assert created is not None and created.status == RUNNING and created.epoch == 1
            # A late tick (fired by a worker that lagged) is created too; last_tick stays the
            # latest fired.
            assert await fire(b, NOW, owner=None)
            [state] = await a.list_schedules()
            assert state.last_tick == NOW + 60
            late = await a.get_run(f"nightly~tick-{int(NOW)}")
            assert late is not None and late.owner is None and late.status == "pending"

    run(body())


def test_a_paused_schedule_fires_nothing_and_a_resume_skips_what_came_due(
    make_store: MakeStore,
) -> None:
    async def body() -> None:
        async with opened(make_store, "w1", "w2") as (a, b):
            await a.register_schedules([definition()], NOW)
            assert await a.set_schedule_paused("nightly", True, NOW) is True
            assert await a.set_schedule_paused("nightly", True, NOW) is False  # already so
            assert not await fire(b, NOW + 60)  # refused: paused, in another worker too
            assert await b.get_run(f"nightly~tick-{int(NOW + 60)}") is None
            assert await b.set_schedule_paused("nightly", False, NOW + 100) is True
            assert await b.set_schedule_paused("nightly", False, NOW + 101) is False
            [state] = await a.list_schedules()
            assert (state.paused, state.resumed_at, state.last_tick) == (False, NOW + 100, None)
            # A tick that came due while paused never runs, even fired after the resume.
            assert not await fire(a, NOW + 60)
            assert not await fire(a, NOW + 100)
            assert await fire(a, NOW + 120)
            assert await a.set_schedule_paused("nope", True, NOW) is None

    run(body())


# -- per-key concurrency ---------------------------------------------------------------------
def test_per_key_limits_hold_across_workers(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1", "w2") as (a, b):
            keys = ["ann", "ann", "ann", "bob", "bob", None, None]
            for i, key in enumerate(keys):
                await a.create_run(
                    new_run(f"r{i}", queue="llm", concurrency_key=key),
                    owner=None,
                    lease_expires=LEASE,
                    now=NOW + i,
                )
            one_each = {"llm": QueueLimits("llm", per_key_concurrency=1)}
            got = {c.run.run_id for c in await claim(a, "w1", queues=one_each)}
            # One run per user; runs without a key are limited by nothing per key.
            assert got == {"r0", "r3", "r5", "r6"}
            assert await claim(b, "w2", queues=one_each) == []  # the limit is global
            await a.finish_run("r0", 1, COMPLETED, output=b"", error=None, pending=[], now=NOW)
            got = {c.run.run_id for c in await claim(b, "w2", queues=one_each)}
            assert got == {"r1"}  # ann's slot freed: her next run, oldest first
            # Two per tenant: bob's second run fits now, ann's third still waits for r1.
            two_each = {"llm": QueueLimits("llm", per_key_concurrency=2)}
            got = {c.run.run_id for c in await claim(a, "w1", queues=two_each)}
            assert got == {"r2", "r4"}

    run(body())


def test_per_key_limit_within_one_claim_and_with_the_queue_limit(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (a,):
            for i in range(6):
                await a.create_run(
                    new_run(f"r{i}", queue="llm", concurrency_key=f"user{i % 2}", priority=i),
                    owner=None,
                    lease_expires=LEASE,
                    now=NOW + i,
                )
            limits = {"llm": QueueLimits("llm", per_key_concurrency=2, concurrency=3)}
            got = [c.run.run_id for c in await claim(a, "w1", queues=limits)]
            # Highest priority first, at most two per user, three in the queue.
            assert sorted(got) == ["r3", "r4", "r5"]
            [more] = await claim(a, "w1", queues={"llm": QueueLimits("llm", per_key_concurrency=2)})
            assert more.run.run_id == "r2"  # user0 had one running (r4), so one more fits

    run(body())


# -- deduplicated starts ----------------------------------------------------------------------
async def start(
    store: Store, run_id: str, key: str, until: float, now: float, **fields: object
) -> tuple[bool, str]:
    created, record = await store.create_run(
        new_run(run_id, dedup_key=key, dedup_until=until, **fields),
        owner=None,
        lease_expires=LEASE,
        now=now,
    )
    return created, record.run_id


def test_a_dedup_key_returns_the_first_run_within_its_window(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1", "w2") as (a, b):
            assert await start(a, "first", "delivery-7", NOW + 60, NOW) == (True, "first")
            # Within the window, from another worker: the first run, nothing created.
            assert await start(b, "second", "delivery-7", NOW + 120, NOW + 30) == (False, "first")
            assert await b.get_run("second") is None
            # The same key for another workflow is another key.
            other = await start(b, "other", "delivery-7", NOW + 60, NOW + 30, workflow="wf2")
            assert other == (True, "other")
            # After the window, a new run holds the key.
            assert await start(a, "third", "delivery-7", NOW + 200, NOW + 60) == (True, "third")
            assert await start(b, "fourth", "delivery-7", NOW + 300, NOW + 100) == (False, "third")

    run(body())


def test_a_dedup_key_and_a_run_id_that_exists(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (a,):
            await a.create_run(new_run("taken"), owner=None, lease_expires=LEASE, now=NOW)
            # The run id is idempotent as ever; the key is then held by the run returned.
            assert await start(a, "taken", "k", NOW + 60, NOW) == (False, "taken")
            assert await start(a, "fresh", "k", NOW + 60, NOW + 1) == (False, "taken")

    run(body())


def test_two_starts_racing_for_a_key_create_one_run(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1", "w2") as (a, b):
            for n in range(5):
                results = await asyncio.gather(
                    start(a, f"a{n}", f"key{n}", NOW + 60, NOW),
                    start(b, f"b{n}", f"key{n}", NOW + 60, NOW),
                )
                assert sorted(created for created, _ in results) == [False, True]
                assert len({run_id for _, run_id in results}) == 1

    run(body())


def test_retention_deletes_the_keys_of_deleted_runs(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (a,):
            for run_id in ("old", "live"):
                created, _ = await a.create_run(
                    new_run(run_id, dedup_key=f"k-{run_id}", dedup_until=NOW + 10_000),
                    owner="w1",
                    lease_expires=LEASE,
                    now=NOW,
                )
                assert created
            await a.finish_run("old", 1, COMPLETED, output=b"", error=None, pending=[], now=NOW)
            assert await a.delete_finished_runs(NOW + 50) == 1
            # The deleted run's key is free again, whatever its window said; the live one's
            # is still held.
            assert await start(a, "old-again", "k-old", NOW + 20_000, NOW + 60) == (
                True,
                "old-again",
            )
            assert await start(a, "live-again", "k-live", NOW + 20_000, NOW + 60) == (
                False,
                "live",
            )

    run(body())
