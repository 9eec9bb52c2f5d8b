"""The storage contract, continued: events, cancellation, blobs, state, retention and
change notification (see test_store_contract.py)."""

from __future__ import annotations

import asyncio
import time

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

from undying.errors import LeaseLost, RunNotFound
from undying.store.base import (
    ARMED,
    CANCELLED,
    COMPLETED,
    ERROR,
    FAILED,
    OK,
    RUNNING,
    WAITING,
    Entry,
    RunFilter,
    child_event_name,
)


# -- events, waiting and cancellation -------------------------------------------------------------
def test_send_event_dedupes_keys_and_wakes_a_waiting_run(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            epoch = await started(store, "r1")
            with pytest.raises(RunNotFound):
                await store.send_event("missing", "go", b"", None, NOW)
            await store.suspend_run(
                "r1", epoch, wake_at=None, wait_events=["go", "stop"], pending=[], now=NOW
            )
            rec = await store.get_run("r1")
            assert rec is not None and (rec.status, rec.wake_at) == (WAITING, None)
            assert await claim(store, "w1") == []
            assert await store.send_event("r1", "unrelated", b"", None, NOW)
            assert await claim(store, "w1") == []
            assert await store.send_event("r1", "go", b"1", "key-1", NOW)
            assert not await store.send_event("r1", "go", b"2", "key-1", NOW)
            [c] = await claim(store, "w1")
            assert (c.run.run_id, c.run.epoch) == ("r1", 2)
            assert await store.take_event("r1", 2, "go", entry(0, kind="event")) == b"1"
            assert await store.take_event("r1", 2, "go", entry(1, kind="event")) is None

    run(body())


def test_suspend_with_an_event_already_stored_is_due_at_once(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            epoch = await started(store, "r1")
            assert await store.send_event("r1", "approval", b"yes", None, NOW)
            await store.suspend_run(
                "r1",
                epoch,
                wake_at=NOW + 3600,
                wait_events=["approval"],
                pending=[entry(0, ARMED)],
                now=NOW,
            )
            rec = await store.get_run("r1")
            assert rec is not None and rec.status == WAITING and rec.wake_at is not None
            assert rec.wake_at <= NOW
            [c] = await claim(store, "w1")
            assert c.run.run_id == "r1"

    run(body())


def test_take_event_consumes_once_and_journals_it(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            epoch = await started(store, "r1")
            await store.send_event("r1", "msg", b"first", None, NOW)
            await store.send_event("r1", "msg", b"second", None, NOW)
            with pytest.raises(LeaseLost):
                await store.take_event("r1", epoch + 1, "msg", entry(0, kind="event", payload=None))
            got = await store.take_event("r1", epoch, "msg", entry(0, kind="event", payload=None))
            assert got == b"first"
            assert await store.take_event("r1", epoch, "msg", entry(1, kind="event")) == b"second"
            assert await store.take_event("r1", epoch, "msg", entry(2, kind="event")) is None
            assert await journal(store, "r1") == [(0, OK, b"first"), (1, OK, b"second")]

    run(body())


def test_request_cancel_covers_the_whole_tree(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            with pytest.raises(RunNotFound):
                await store.request_cancel("missing", b"cancelled", NOW)
            await started(store, "parent")
            await store.create_run(
                new_run("child", parent_id="parent"), owner=None, lease_expires=LEASE, now=NOW
            )
            epoch = await started(store, "grandchild", parent_id="child")
            await store.suspend_run(
                "grandchild", epoch, wake_at=NOW + 60, wait_events=[], pending=[], now=NOW
            )
            await store.create_run(
                new_run("done", parent_id="parent"), owner="w1", lease_expires=LEASE, now=NOW
            )
            await store.finish_run(
                "done", 1, COMPLETED, output=b"", error=None, pending=[], now=NOW
            )

            flagged = await store.request_cancel("parent", b"cancelled", NOW)
            assert flagged == ["parent"]
            statuses = {
                r.run_id: (r.status, r.cancel_requested) for r in await store.list_runs(RunFilter())
            }
            assert statuses["parent"] == (RUNNING, True)
            assert statuses["child"][0] == CANCELLED
            assert statuses["grandchild"][0] == CANCELLED
            assert statuses["done"][0] == COMPLETED
            assert (await store.get_run("child")).error == b"cancelled"  # type: ignore[union-attr]
            assert await store.heartbeat("w1", LEASE + 100, ["parent"]) == ["parent"]
            assert await store.cancel_requests("w1") == ["parent"]
            assert await store.cancel_requests("w2") == []
            assert await claim(store, "w1", now=NOW + 61) == []  # cancelled runs stay ended

    run(body())


def test_finished_child_wakes_its_waiting_parent(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1", "w2") as (a, b):
            parent_epoch = await started(a, "parent", owner="w1")
            child_epoch = await started(b, "child", owner="w2", parent_id="parent")
            await a.suspend_run(
                "parent",
                parent_epoch,
                wake_at=None,
                wait_events=[child_event_name("child")],
                pending=[entry(0, ARMED, kind="call")],
                now=NOW,
            )
            assert await claim(a, "w1") == []
            await b.finish_run(
                "child",
                child_epoch,
                COMPLETED,
                output=b"answer",
                error=None,
                pending=[entry(0), entry(1)],
                now=NOW,
            )
            child = await b.get_run("child")
            assert child is not None
            assert (child.status, child.output, child.owner, child.lease_expires) == (
                COMPLETED,
                b"answer",
                None,
                None,
            )
            assert [seq for seq, _, _ in await journal(b, "child")] == [0, 1]
            [c] = await claim(a, "w1")
            assert c.run.run_id == "parent"
            name = child_event_name("child")
            assert await a.take_event("parent", c.run.epoch, name, entry(0, kind="call")) == b""

    run(body())


# -- blobs, state, retention ----------------------------------------------------------------------
def test_blobs_are_stored_once_by_hash(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            await store.put_blobs({b"h1": b"one", b"h2": b"two" * 1000})
            await store.put_blobs({b"h1": b"one"})
            await store.put_blobs({})
            got = await store.get_blobs([b"h1", b"h2", b"h3"])
            assert got == {b"h1": b"one", b"h2": b"two" * 1000}
            assert await store.get_blobs([]) == {}

    run(body())


def test_blob_gc_primitives(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            before = time.time()
            await store.put_blobs({b"h1": b"one", b"h2": b"two"})
            assert sorted(await store.blob_hashes(time.time() + 1)) == [b"h1", b"h2"]
            assert await store.blob_hashes(before - 1) == []
            middle = time.time()
            await asyncio.sleep(0.01)
            await store.put_blobs({b"h2": b"two"})  # re-used: GC must spare it
            assert await store.blob_hashes(middle) == [b"h1"]

            epoch = await started(store, "r1")
            await store.write_entries(
                "r1", epoch, [entry(0, payload=b"\x10root-ref"), entry(1, payload=b"plain")]
            )
            assert await store.ref_payloads() == [b"\x10root-ref"]

            # The sweep spares a blob re-used after the mark phase's cutoff.
            await store.delete_blobs([b"h1", b"h2", b"unknown"], middle)
            await store.delete_blobs([], middle)
            assert await store.get_blobs([b"h1", b"h2"]) == {b"h2": b"two"}

    run(body())


def test_load_state_finds_the_latest_write_before_a_position(make_store: MakeStore) -> None:
    def state(seq: int, key: str, value: bytes, status: str = OK) -> Entry:
        return entry(seq, status, value, kind="state", name=key)

    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            epoch = await started(store, "r1")
            await store.write_entries(
                "r1",
                epoch,
                [
                    state(0, "k", b"v0"),
                    entry(1, payload=b"step", name="k"),
                    state(2, "other", b"o2"),
                    state(3, "k", b"v3"),
                    state(4, "k", b"v4", status=ERROR),
                ],
            )
            assert await store.load_state("r1", "k", 0) is None
            assert await store.load_state("r1", "k", 1) == b"v0"
            assert await store.load_state("r1", "k", 3) == b"v0"
            assert await store.load_state("r1", "k", 4) == b"v3"
            assert await store.load_state("r1", "k", 99) == b"v3"
            assert await store.load_state("r1", "missing", 99) is None
            assert await store.load_state("r2", "k", 99) is None

    run(body())


def test_delete_finished_runs_takes_whole_old_trees(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            for rid, parent in (("old", None), ("old-child", "old"), ("new", None), ("busy", None)):
                epoch = await started(store, rid, parent_id=parent)
                await store.write_entries(rid, epoch, [entry(0)])
                await store.send_event(rid, "e", b"", None, NOW)
            await store.finish_run(
                "old", 1, COMPLETED, output=b"", error=None, pending=[], now=NOW - 100
            )
            await store.finish_run("new", 1, FAILED, output=None, error=b"", pending=[], now=NOW)
            await store.continue_as_new("busy", 1, b"again", NOW - 100)

            assert await store.delete_finished_runs(NOW - 50) == 2
            remaining = sorted(r.run_id for r in await store.list_runs(RunFilter()))
            assert remaining == ["busy", "new"]
            assert await store.load_journal_meta("old") == []
            assert await store.load_journal_meta("old-child") == []
            with pytest.raises(RunNotFound):
                await store.send_event("old", "e", b"", None, NOW)
            assert await store.delete_finished_runs(NOW - 50) == 0

    run(body())


# -- change notification --------------------------------------------------------------------------
def test_wait_for_change_wakes_on_another_stores_write(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1", "w2") as (a, b):
            assert await b.wait_for_change(0.05) is False
            waiter = asyncio.ensure_future(b.wait_for_change(10))
            await asyncio.sleep(0.05)
            assert not waiter.done()
            started_at = time.monotonic()
            await a.create_run(new_run("r1"), owner=None, lease_expires=LEASE, now=NOW)
            assert await waiter is True
            assert time.monotonic() - started_at < 2
            # The change was reported once; a store's own writes do not wake itself.
            assert await b.wait_for_change(0.05) is False
            await b.send_event("r1", "e", b"", None, NOW)
            assert await b.wait_for_change(0.1) is False
            assert await a.wait_for_change(2) is True

    run(body())
