"""The storage contract: every test runs unchanged against every store (see conftest).

Several open stores on one database stand for several worker processes. Tests are plain
functions around ``asyncio.run`` so each one owns its event loop from open to close.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
from store_helpers import (
    LEASE,
    NOW,
    MakeStore,
    claim,
    entry,
    journal,
    new_run,
    opened,
    run,
    started,
)

from undying.errors import InvalidArgument, LeaseLost
from undying.store import store_from_url
from undying.store.base import (
    ARMED,
    COMPLETED,
    ERROR,
    FAILED,
    INTENT,
    OK,
    PENDING,
    RUNNING,
    WAITING,
    Entry,
    NewRun,
    QueueLimits,
    RunFilter,
    Store,
)
from undying.store.memory import MemoryTransaction
from undying.store.sqlfiles import migrations
from undying.store.sqlite import SQLiteStore


# -- lifecycle ------------------------------------------------------------------------------------
def test_migrations_apply_once_even_when_workers_race(backend: str, fresh_url: str) -> None:
    def make() -> Store:
        return store_from_url(fresh_url)

    # A memory database has no schema: a new one is current, there is nothing to apply.
    names = [] if backend == "memory" else [name for _, name, _ in migrations(backend)]
    assert backend == "memory" or names[:2] == ["001_init.sql", "002_queues.sql"]

    async def body() -> None:
        results = await asyncio.gather(*(make().migrate() for _ in range(3)))
        assert sorted(results) == [[], [], names]
        assert await make().migrate() == []

    run(body())


def test_durability_is_validated(store: Store) -> None:
    target = store.path if isinstance(store, SQLiteStore) else store.url
    for ok in ("normal", "full"):
        type(store)(target, durability=ok)  # type: ignore[call-arg]
    with pytest.raises(InvalidArgument, match="durability"):
        type(store)(target, durability="fast")  # type: ignore[call-arg]


# -- runs -----------------------------------------------------------------------------------------
def test_create_run_is_idempotent_and_may_claim_at_once(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            created, rec = await store.create_run(
                new_run("r1", priority=3, queue="q", deadline=NOW + 5),
                owner=None,
                lease_expires=LEASE,
                now=NOW,
            )
            assert created
            assert (rec.status, rec.epoch, rec.owner, rec.lease_expires) == (PENDING, 0, None, None)
            again, existing = await store.create_run(
                NewRun("r1", "other", b"other input"), owner="w1", lease_expires=LEASE, now=NOW + 1
            )
            assert not again
            assert (existing.workflow, existing.input, existing.status) == ("wf", b"in", PENDING)
            assert (existing.priority, existing.queue, existing.deadline) == (3, "q", NOW + 5)

            created, owned = await store.create_run(
                new_run("r2"), owner="w1", lease_expires=LEASE, now=NOW
            )
            assert created
            assert (owned.status, owned.epoch, owned.owner, owned.lease_expires) == (
                RUNNING,
                1,
                "w1",
                LEASE,
            )
            stored = await store.get_run("r2")
            assert stored == owned
            assert await store.get_run("missing") is None

    run(body())


def test_list_runs_filters_and_orders_newest_first(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            for i, (rid, wf, parent) in enumerate(
                [("a", "x", None), ("b", "y", "a"), ("c", "x", "a"), ("d", "x", None)]
            ):
                await store.create_run(
                    new_run(rid, workflow=wf, parent_id=parent),
                    owner="w1" if rid == "d" else None,
                    lease_expires=LEASE,
                    now=NOW + i,
                )
            ids = lambda runs: [r.run_id for r in runs]  # noqa: E731
            assert ids(await store.list_runs(RunFilter())) == ["d", "c", "b", "a"]
            assert ids(await store.list_runs(RunFilter(workflow="x"))) == ["d", "c", "a"]
            assert ids(await store.list_runs(RunFilter(status=PENDING, workflow="x"))) == ["c", "a"]
            assert ids(await store.list_runs(RunFilter(parent_id="a"))) == ["c", "b"]
            assert ids(await store.list_runs(RunFilter(limit=2))) == ["d", "c"]

    run(body())


def test_release_and_resume_make_runs_claimable(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            await started(store, "r1")
            await store.release_runs("someone-else", ["r1"], NOW)
            assert (await store.get_run("r1")).status == RUNNING  # type: ignore[union-attr]
            await store.release_runs("w1", ["r1"], NOW)
            rec = await store.get_run("r1")
            assert rec is not None and (rec.status, rec.owner) == (PENDING, None)
            [c] = await claim(store, "w1")
            assert (c.run.run_id, c.run.epoch, c.takeover) == ("r1", 2, False)

            await store.finish_run("r1", 2, FAILED, output=None, error=b"boom", pending=[], now=NOW)
            assert await store.resume_run("r1", NOW)
            rec = await store.get_run("r1")
            assert rec is not None and (rec.status, rec.error, rec.owner) == (PENDING, None, None)
            assert not await store.resume_run("r1", NOW)  # only failed or cancelled runs
            assert not await store.resume_run("missing", NOW)

    run(body())


def test_set_status_value_is_fenced(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            epoch = await started(store, "r1")
            await store.set_status_value("r1", epoch, b"phase 1")
            with pytest.raises(LeaseLost):
                await store.set_status_value("r1", epoch + 1, b"zombie")
            assert (await store.get_run("r1")).status_value == b"phase 1"  # type: ignore[union-attr]

    run(body())


# -- journal and fencing --------------------------------------------------------------------------
def test_stale_epoch_writes_raise_lease_lost_and_change_nothing(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1", "w2") as (a, b):
            await started(a, "r1", owner="w1")
            await a.write_entries("r1", 1, [entry(0)])
            # w2 takes the run over (lease expired): w1 is now a zombie holding epoch 1.
            [c] = await claim(b, "w2", now=LEASE + 1)
            assert (c.takeover, c.run.epoch, c.run.owner) == (True, 2, "w2")

            for entries in ([entry(1)], [entry(1), entry(2)]):
                with pytest.raises(LeaseLost, match="r1"):
                    await a.write_entries("r1", 1, entries)
            with pytest.raises(LeaseLost):
                await a.write_entries("r1", 1, [entry(1)], durable=True)
            with pytest.raises(LeaseLost):
                await a.finish_run("r1", 1, COMPLETED, output=b"x", error=None, pending=[], now=NOW)
            with pytest.raises(LeaseLost):
                await a.suspend_run(
                    "r1", 1, wake_at=NOW, wait_events=[], pending=[entry(1)], now=NOW
                )
            with pytest.raises(LeaseLost):
                await a.continue_as_new("r1", 1, b"new", NOW)
            with pytest.raises(LeaseLost):
                await a.write_entries("missing", 1, [entry(0)])

            assert await journal(b, "r1") == [(0, OK, b"result")]
            rec = await b.get_run("r1")
            assert rec is not None
            assert (rec.status, rec.owner, rec.epoch, rec.generation) == (RUNNING, "w2", 2, 0)
            await b.write_entries("r1", 2, [entry(1)])  # the new owner writes fine
            assert [seq for seq, _, _ in await journal(b, "r1")] == [0, 1]

    run(body())


def test_open_entries_are_replaced_completed_ones_never(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            epoch = await started(store, "r1")
            await store.write_entries("r1", epoch, [entry(0, INTENT, None)], durable=True)
            await store.write_entries("r1", epoch, [entry(1, ARMED, b"deadline")])
            assert await journal(store, "r1") == [(0, INTENT, None), (1, ARMED, b"deadline")]

            await store.write_entries("r1", epoch, [entry(0, OK, b"charged")])
            await store.write_entries("r1", epoch, [entry(1, OK, b"fired", attempt=2)])
            assert await journal(store, "r1") == [(0, OK, b"charged"), (1, OK, b"fired")]
            assert (await store.load_journal_meta("r1"))[1].attempt == 2

            with pytest.raises(LeaseLost):
                await store.write_entries("r1", epoch, [entry(0, ERROR, b"rewrite")])
            # A batch is atomic: its first entry is not kept when the second is refused.
            with pytest.raises(LeaseLost):
                await store.write_entries("r1", epoch, [entry(2), entry(1, OK, b"rewrite")])
            assert await journal(store, "r1") == [(0, OK, b"charged"), (1, OK, b"fired")]

            # So are finish and suspend with their last entries: all or nothing.
            with pytest.raises(LeaseLost):
                await store.finish_run(
                    "r1",
                    epoch,
                    COMPLETED,
                    output=b"",
                    error=None,
                    pending=[entry(2), entry(0, ERROR, b"rewrite")],
                    now=NOW,
                )
            with pytest.raises(LeaseLost):
                await store.suspend_run(
                    "r1",
                    epoch,
                    wake_at=NOW,
                    wait_events=[],
                    pending=[entry(2), entry(1, ERROR, b"rewrite")],
                    now=NOW,
                )
            rec = await store.get_run("r1")
            assert rec is not None and (rec.status, rec.owner) == (RUNNING, "w1")
            assert await journal(store, "r1") == [(0, OK, b"charged"), (1, OK, b"fired")]

            # An intent and its outcome in one batch (same position twice).
            await store.write_entries("r1", epoch, [entry(2, INTENT, None), entry(2, OK, b"done")])
            assert (await journal(store, "r1"))[2] == (2, OK, b"done")

    run(body())


def test_journal_meta_inlines_small_payloads_and_defers_large(make_store: MakeStore) -> None:
    big = bytes(range(256)) * 64

    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            epoch = await started(store, "r1")
            await store.write_entries(
                "r1",
                epoch,
                [
                    entry(0, payload=b"small", digest=b"d0", kind="now", name="clock"),
                    entry(1, payload=big),
                    entry(2, ARMED, payload=None, kind="sleep", name="sleep"),
                ],
            )
            meta = await store.load_journal_meta("r1")
            assert [(e.seq, e.kind, e.name, e.status) for e in meta] == [
                (0, "now", "clock", OK),
                (1, "step", "step1", OK),
                (2, "sleep", "sleep", ARMED),
            ]
            first, second, third = meta
            assert (first.payload, first.deferred, first.digest) == (b"small", False, b"d0")
            assert (first.attempt, first.started_at, first.finished_at) == (1, NOW, NOW)
            assert (second.payload, second.deferred) == (None, True)
            assert (third.payload, third.deferred, third.finished_at) == (None, False, None)
            assert await store.load_payloads("r1", [1, 2, 99]) == {1: big}
            assert await store.load_payloads("r1", []) == {}
            assert await store.load_journal_meta("missing") == []

    run(body())


def test_copy_journal_copies_completed_entries_before_a_position(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            epoch = await started(store, "src")
            await store.write_entries(
                "src",
                epoch,
                [entry(0), entry(1, ERROR, b"err"), entry(2, INTENT, None), entry(3), entry(4)],
            )
            await store.create_run(new_run("dst"), owner=None, lease_expires=LEASE, now=NOW)
            assert await store.copy_journal("src", "dst", 4) == 3
            assert await journal(store, "dst") == [
                (0, OK, b"result"),
                (1, ERROR, b"err"),
                (3, OK, b"result"),
            ]

    run(body())


def test_fork_run_creates_the_run_with_its_journal_or_nothing(make_store: MakeStore) -> None:
    """A fork is created already holding its copied journal: a worker that claims it at any
    moment replays the copied steps instead of executing them (and their effects) again."""

    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            epoch = await started(store, "src")
            await store.write_entries("src", epoch, [entry(0), entry(1), entry(2, INTENT, None)])
            assert await store.fork_run(new_run("fork"), "src", 3, NOW) is True
            fork = await store.get_run("fork")
            assert fork is not None and (fork.status, fork.owner) == (PENDING, None)
            assert await journal(store, "fork") == [(0, OK, b"result"), (1, OK, b"result")]
            # An id that exists is refused whole: nothing is copied into that run.
            await store.create_run(new_run("taken"), owner=None, lease_expires=LEASE, now=NOW)
            assert await store.fork_run(new_run("taken"), "src", 3, NOW) is False
            assert await journal(store, "taken") == []

    run(body())


def test_continue_as_new_clears_journal_and_bumps_generation(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            epoch = await started(store, "r1")
            await store.write_entries("r1", epoch, [entry(0), entry(1)])
            await store.set_status_value("r1", epoch, b"turn 1")
            await store.continue_as_new("r1", epoch, b"fresh input", NOW)
            rec = await store.get_run("r1")
            assert rec is not None
            assert (rec.input, rec.generation, rec.status_value) == (b"fresh input", 1, None)
            assert (rec.status, rec.epoch, rec.owner) == (RUNNING, epoch, "w1")
            assert await store.load_journal_meta("r1") == []
            await store.write_entries("r1", epoch, [entry(0, payload=b"gen 1")])
            await store.continue_as_new("r1", epoch, b"third", NOW)
            assert (await store.get_run("r1")).generation == 2  # type: ignore[union-attr]

    run(body())


def test_run_transaction_commits_with_its_journal_entry(
    make_store: MakeStore, backend: str
) -> None:
    if backend == "sqlite":

        def insert(db: sqlite3.Connection, value: str) -> str:
            db.execute("CREATE TABLE IF NOT EXISTS app_rows (v TEXT)")
            db.execute("INSERT INTO app_rows VALUES (?)", (value,))
            return value.upper()

        def count(db: sqlite3.Connection, value: str) -> int:
            db.execute("CREATE TABLE IF NOT EXISTS app_rows (v TEXT)")
            return int(
                db.execute("SELECT count(*) FROM app_rows WHERE v = ?", (value,)).fetchone()[0]
            )

        fn: Callable[..., Any] = insert
        reader: Callable[..., Any] = count
    elif backend == "memory":  # fn gets a key-value table in place of a connection

        def insert_memory(tx: MemoryTransaction, value: str) -> str:
            tx.set(value, True)
            return value.upper()

        async def count_memory(tx: MemoryTransaction, value: str) -> int:
            return int(value in tx)

        fn, reader = insert_memory, count_memory
    else:

        async def insert_pg(conn: Any, value: str) -> str:
            await conn.execute("CREATE TABLE IF NOT EXISTS app_rows (v TEXT)")
            await conn.execute("INSERT INTO app_rows VALUES (%s)", (value,))
            return value.upper()

        async def count_pg(conn: Any, value: str) -> int:
            await conn.execute("CREATE TABLE IF NOT EXISTS app_rows (v TEXT)")
            cur = await conn.execute("SELECT count(*) FROM app_rows WHERE v = %s", (value,))
            return int((await cur.fetchone())[0])

        fn, reader = insert_pg, count_pg

    def tx_entry(result: str) -> list[Entry]:
        return [entry(0, kind="tx", payload=result.encode())]

    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            epoch = await started(store, "r1")
            assert await store.run_transaction("r1", epoch, fn, ("kept",), tx_entry) == "KEPT"
            assert await journal(store, "r1") == [(0, OK, b"KEPT")]
            with pytest.raises(LeaseLost):
                await store.run_transaction("r1", epoch + 1, fn, ("zombie",), tx_entry)
            with pytest.raises(LeaseLost):  # position 0 is completed: the whole tx rolls back
                await store.run_transaction("r1", epoch, fn, ("again",), tx_entry)

            def no_entries(_: Any) -> list[Entry]:
                return []

            counts = [
                await store.run_transaction("r1", epoch, reader, (v,), no_entries)
                for v in ("kept", "zombie", "again")
            ]
            assert counts == [1, 0, 0]

    run(body())


# -- claiming and leases --------------------------------------------------------------------------
def test_claim_takes_pending_then_due_waiting_runs(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            await store.create_run(new_run("low"), owner=None, lease_expires=LEASE, now=NOW)
            await store.create_run(
                new_run("high", priority=5), owner=None, lease_expires=LEASE, now=NOW + 1
            )
            [first] = await claim(store, "w1", limit=1)
            assert (first.run.run_id, first.run.status, first.run.epoch) == ("high", RUNNING, 1)
            assert (first.run.owner, first.run.lease_expires, first.takeover) == (
                "w1",
                LEASE,
                False,
            )
            [second] = await claim(store, "w1")
            assert second.run.run_id == "low"
            assert await claim(store, "w1") == []

            epoch = await started(store, "sleeper")
            await store.suspend_run(
                "sleeper",
                epoch,
                wake_at=NOW + 100,
                wait_events=[],
                pending=[entry(0, ARMED)],
                now=NOW,
            )
            rec = await store.get_run("sleeper")
            assert rec is not None and (rec.status, rec.owner, rec.wake_at) == (
                WAITING,
                None,
                NOW + 100,
            )
            assert await store.next_wake_at() == NOW + 100
            # keep the leases of the runs claimed above (still executing) past the wake time
            await store.heartbeat("w1", NOW + 1000, ["high", "low"])
            assert await claim(store, "w1", now=NOW + 99) == []
            [woken] = await claim(store, "w1", now=NOW + 100)
            assert (woken.run.run_id, woken.run.epoch, woken.run.status) == ("sleeper", 2, RUNNING)
            assert woken.run.wake_at is None
            assert await store.next_wake_at() is None
            assert await claim(store, "w1", limit=0) == []

    run(body())


def test_dead_owner_is_taken_over_at_once(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w2") as (b,):
            a = make_store()
            await a.open("w1")
            try:
                await started(a, "r1", owner="w1")
                assert await claim(b, "w2") == []  # alive, lease valid: left alone
            finally:
                await a.close()  # the process dies
            [c] = await claim(b, "w2")
            assert (c.run.run_id, c.takeover, c.run.epoch, c.run.owner) == ("r1", True, 2, "w2")
            assert c.run.status == RUNNING
            assert await claim(b, "w2") == []

    run(body())


def test_heartbeat_extends_only_runs_still_executing(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (a,):
            await started(a, "alive", owner="w1")
            await started(a, "orphan", owner="w1")  # its task died in this worker
            assert await a.heartbeat("w1", LEASE + 100, ["alive"]) == []
            [again] = await claim(a, "w1", now=LEASE + 1)  # its own expired lease, reclaimed
            assert (again.run.run_id, again.takeover, again.run.epoch) == ("orphan", True, 2)

    run(body())


def test_expired_lease_is_taken_over_and_heartbeat_prevents_it(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1", "w2") as (a, b):
            await started(a, "r1", owner="w1")  # lease until LEASE
            await started(a, "r2", owner="w1")
            assert await claim(b, "w2", now=LEASE - 1) == []
            assert await a.heartbeat("w1", LEASE + 100, ["r1", "r2"]) == []
            assert await claim(b, "w2", now=LEASE + 1) == []
            claims = await claim(b, "w2", now=LEASE + 101, limit=1)
            assert [(c.takeover, c.run.epoch, c.run.owner) for c in claims] == [(True, 2, "w2")]
            [rest] = await claim(b, "w2", now=LEASE + 101)
            assert rest.run.run_id != claims[0].run.run_id

    run(body())


def test_queue_limits_hold_across_workers(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1", "w2") as (a, b):
            for i in range(5):
                await a.create_run(
                    new_run(f"q{i}", queue="q"), owner=None, lease_expires=LEASE, now=NOW + i
                )
            for i in range(3):
                await a.create_run(
                    new_run(f"r{i}", queue="rl"), owner=None, lease_expires=LEASE, now=NOW + i
                )
            await a.create_run(new_run("free"), owner=None, lease_expires=LEASE, now=NOW)
            await a.create_run(
                new_run("other", queue="unconfigured"), owner=None, lease_expires=LEASE, now=NOW
            )
            limits = {
                "q": QueueLimits("q", concurrency=2),
                "rl": QueueLimits("rl", rate_limit=(2, 5.0)),
            }
            got = {c.run.run_id for c in await claim(a, "w1", queues=limits)}
            # "other" is on a queue this worker does not declare: it does not know that
            # queue's limits, so it leaves the run to workers that do.
            assert got == {"q0", "q1", "r0", "r1", "free"}
            assert await claim(b, "w2", queues=limits) == []  # the limits are global

            await a.finish_run("q0", 1, COMPLETED, output=b"", error=None, pending=[], now=NOW)
            await a.finish_run("r0", 1, COMPLETED, output=b"", error=None, pending=[], now=NOW)
            got = {c.run.run_id for c in await claim(b, "w2", queues=limits)}
            assert got == {"q2"}  # a concurrency slot freed; the rate limit still holds
            got = {c.run.run_id for c in await claim(b, "w2", now=NOW + 6, queues=limits)}
            assert got == {"r2"}  # once the window has passed, the rate limit allows more

            per_worker = {"q": QueueLimits("q", worker_concurrency=1)}
            assert await claim(a, "w1", queues=per_worker, per_queue={"q": 1}) == []
            [one] = await claim(a, "w1", queues=per_worker, per_queue={"q": 0})
            assert one.run.run_id == "q3"

    run(body())
