"""Durable streams (ctx.publish, app.read_stream) at the store, against every store."""

from __future__ import annotations

import asyncio

import pytest
from store_helpers import NOW, MakeStore, claim, entry, journal, new_run, opened, run, started

from undying.errors import LeaseLost, StreamClosed
from undying.store.base import (
    CLOSE_STREAM,
    COMPLETED,
    FAILED,
    OK,
    PUBLISH,
    RETRY,
    VALUE,
    Entry,
    Store,
    StreamAppend,
    StreamItem,
    StreamPage,
)


def publish(seq: int, stream: str = "answer", *, generation: int = 0) -> StreamAppend:
    return StreamAppend(stream, generation, seq, payloads=[f"v{seq}".encode()])


def publish_entry(seq: int, stream: str = "answer") -> list[Entry]:
    return [entry(seq, kind=PUBLISH, name=stream, payload=None)]


def step_values(
    seq: int, attempt: int, values: list[bytes], *, first: int = 0, stream: str = "answer"
) -> StreamAppend:
    """A step attempt's batch; its first batch asks for a marker if earlier attempts left
    values."""
    marker = b"step-name" if first == 0 else None
    return StreamAppend(stream, 0, seq, attempt, first, values, marker=marker)


async def values(
    store: Store, run_id: str, stream: str = "answer", offset: int = 0
) -> list[tuple[int, str, bytes | None, int]]:
    page = await store.read_stream(run_id, stream, offset, 1000)
    return [(i.offset, i.kind, i.payload, i.discarded) for i in page.items]


def test_workflow_publishes_take_dense_offsets_and_commit_with_their_entries(
    make_store: MakeStore,
) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            epoch = await started(store, "r1")
            buffered = entry(0, kind="now", name="now", payload=b"t")
            assert await store.append_stream(
                "r1", epoch, publish(1), [buffered, *publish_entry(1)], NOW
            )
            for seq in (2, 3):
                assert await store.append_stream("r1", epoch, publish(seq), publish_entry(seq), NOW)
            assert await values(store, "r1") == [
                (0, VALUE, b"v1", 0),
                (1, VALUE, b"v2", 0),
                (2, VALUE, b"v3", 0),
            ]
            assert await journal(store, "r1") == [
                (0, OK, b"t"),
                (1, OK, None),
                (2, OK, None),
                (3, OK, None),
            ]
            page = await store.read_stream("r1", "answer", 1, 1)
            assert page == StreamPage(
                "running", 3, None, [StreamItem(1, VALUE, b"v2", 0, 2, 0, 0, NOW)]
            )
            assert not page.ended

    run(body())


def test_a_publish_written_again_at_its_journal_position_is_a_no_op(
    make_store: MakeStore,
) -> None:
    """A write retried after a lost acknowledgement (or a replay that somehow publishes
    again) finds its journal entry and writes nothing."""

    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            epoch = await started(store, "r1")
            assert await store.append_stream("r1", epoch, publish(0), publish_entry(0), NOW)
            again = entry(1, kind="now", name="now", payload=b"t")  # buffered values too
            written = await store.append_stream(
                "r1", epoch, publish(0), [again, *publish_entry(0)], NOW
            )
            assert written is False
            assert await values(store, "r1") == [(0, VALUE, b"v0", 0)]
            assert await journal(store, "r1") == [(0, OK, None)]
            # Another call's completed entry at that position: refused like any journal write.
            await store.write_entries("r1", epoch, [entry(1)])
            with pytest.raises(LeaseLost):
                await store.append_stream("r1", epoch, publish(1), publish_entry(1), NOW)
            assert await values(store, "r1") == [(0, VALUE, b"v0", 0)]

    run(body())


def test_a_step_batch_retried_is_written_once_and_a_step_run_again_gets_a_marker(
    make_store: MakeStore,
) -> None:
    async def body() -> None:
        async with opened(make_store, "w1", "w2") as (store, other):
            epoch = await started(store, "r1")
            await store.append_stream("r1", epoch, publish(0), publish_entry(0), NOW)
            assert await store.append_stream("r1", epoch, step_values(1, 1, [b"a", b"b"]), [], NOW)
            assert await store.append_stream(
                "r1", epoch, step_values(1, 1, [b"c"], first=2), [], NOW
            )
            # A retry of the last batch (its acknowledgement lost): nothing twice.
            assert not await store.append_stream(
                "r1", epoch, step_values(1, 1, [b"c"], first=2), [], NOW
            )
            # Attempt 2 of the step: its first batch voids attempt 1's three values.
            assert await store.append_stream("r1", epoch, step_values(1, 2, [b"A"]), [], NOW)
            # The worker dies; the next owner runs the step again (attempt 1 of epoch 2).
            await store.close()
            [taken] = await claim(other, "w2")
            new = taken.run.epoch
            assert new == epoch + 1
            assert await other.append_stream("r1", new, step_values(1, 1, [b"X", b"Y"]), [], NOW)
            assert await values(other, "r1") == [
                (0, VALUE, b"v0", 0),
                (1, VALUE, b"a", 0),
                (2, VALUE, b"b", 0),
                (3, VALUE, b"c", 0),
                (4, RETRY, b"step-name", 3),
                (5, VALUE, b"A", 0),
                (6, RETRY, b"step-name", 1),
                (7, VALUE, b"X", 0),
                (8, VALUE, b"Y", 0),
            ]
            page = await other.read_stream("r1", "answer", 6, 1)
            assert [(i.seq, i.attempt, i.generation) for i in page.items] == [(1, 1, 0)]
            # The first attempt of another step, or of this one once it left no values: no
            # marker.
            assert await other.append_stream("r1", new, step_values(2, 1, [b"z"]), [], NOW)
            assert (await values(other, "r1", offset=9)) == [(9, VALUE, b"z", 0)]

    run(body())


def test_close_ends_the_stream_and_refuses_later_publishes(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            epoch = await started(store, "r1")
            await store.append_stream("r1", epoch, publish(0), publish_entry(0), NOW)
            close = StreamAppend("answer", 0, 1, close=True)
            closing = [entry(1, kind=CLOSE_STREAM, name="answer", payload=None)]
            assert await store.append_stream("r1", epoch, close, closing, NOW + 1)
            assert not await store.append_stream("r1", epoch, close, closing, NOW + 2)
            page = await store.read_stream("r1", "answer", 0, 10)
            assert (page.length, page.closed_at, page.ended) == (1, NOW + 1, True)
            assert [i.payload for i in page.items] == [b"v0"]
            with pytest.raises(StreamClosed, match=r"closed by ctx\.close_stream"):
                await store.append_stream("r1", epoch, publish(2), publish_entry(2), NOW)
            with pytest.raises(StreamClosed):
                await store.append_stream("r1", epoch, step_values(3, 1, [b"s"]), [], NOW)
            # Nothing of the refused calls was written, their entries neither.
            assert await values(store, "r1") == [(0, VALUE, b"v0", 0)]
            assert [seq for seq, _, _ in await journal(store, "r1")] == [0, 1]
            # A stream closed before anything was published exists, empty and closed.
            close_early = StreamAppend("log", 0, 2, close=True)
            early = [entry(2, kind=CLOSE_STREAM, name="log", payload=None)]
            await store.append_stream("r1", epoch, close_early, early, NOW + 3)
            assert [(s.name, s.length, s.closed_at) for s in await store.list_streams("r1")] == [
                ("answer", 1, NOW + 1),
                ("log", 0, NOW + 3),
            ]

    run(body())


def test_streams_end_with_their_run_and_refuse_zombies(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1", "w2") as (store, other):
            epoch = await started(store, "r1")
            await store.append_stream("r1", epoch, publish(0), publish_entry(0), NOW)
            # A stale epoch is fenced out: nothing written.
            with pytest.raises(LeaseLost):
                await store.append_stream("r1", epoch + 1, publish(1), publish_entry(1), NOW)
            await store.finish_run(
                "r1", epoch, FAILED, output=None, error=b"e", pending=[], now=NOW
            )
            page = await other.read_stream("r1", "answer", 0, 10)
            assert (page.run_status, page.closed_at, page.ended) == (FAILED, None, True)
            never = await other.read_stream("r1", "never-published", 0, 10)
            assert (never.length, never.items, never.ended) == (0, [], True)
            with pytest.raises(StreamClosed, match="the run has ended"):
                await store.append_stream("r1", epoch, publish(1), publish_entry(1), NOW)
            assert await other.read_stream("nope", "answer", 0, 10) == StreamPage(None)
            # Resumed, the run's streams it did not close are open again.
            assert await other.resume_run("r1", NOW)
            assert not (await other.read_stream("r1", "answer", 0, 10)).ended

    run(body())


def test_appends_from_several_sessions_take_consecutive_offsets(make_store: MakeStore) -> None:
    """Parallel steps of one run publish to one stream at once: every value gets its own
    offset, none is lost, offsets stay dense."""

    async def body() -> None:
        async with opened(make_store, "w1", "w2") as (a, b):
            epoch = await started(a, "r1")

            async def batch(store: Store, seq: int) -> None:
                for i in range(5):
                    payload = f"{seq}.{i}".encode()
                    append = StreamAppend("s", 0, seq, 1, i, [payload], marker=None)
                    await store.append_stream("r1", epoch, append, [], NOW)

            await asyncio.gather(*(batch(a if n % 2 else b, n) for n in range(8)))
            items = (await a.read_stream("r1", "s", 0, 1000)).items
            assert [i.offset for i in items] == list(range(40))
            assert sorted(i.payload for i in items) == sorted(
                f"{n}.{i}".encode() for n in range(8) for i in range(5)
            )
            for n in range(8):  # each step's values in the order it published them
                mine = [i.payload for i in items if i.seq == n]
                assert mine == [f"{n}.{i}".encode() for i in range(5)]

    run(body())


def test_an_append_wakes_a_reader_in_another_store(make_store: MakeStore, backend: str) -> None:
    async def body() -> None:
        async with opened(make_store, "w1", "reader") as (store, reader):
            epoch = await started(store, "r1")
            await reader.wait_for_activity(0)  # forget what was before
            await reader.wait_for_change(0)
            waiting = asyncio.ensure_future(reader.wait_for_activity(10))
            await asyncio.sleep(0)
            await store.append_stream("r1", epoch, publish(0), publish_entry(0), NOW)
            assert await asyncio.wait_for(waiting, 10)
            if backend == "postgres":
                # Announced apart: a stream append does not wake workers' schedulers.
                assert not await reader.wait_for_change(0.3)
            # The end of the run wakes readers too (its streams end with it).
            await reader.wait_for_activity(0)
            waiting = asyncio.ensure_future(reader.wait_for_activity(10))
            await asyncio.sleep(0)
            await store.finish_run(
                "r1", epoch, COMPLETED, output=b"", error=None, pending=[], now=NOW
            )
            assert await asyncio.wait_for(waiting, 10)

    run(body())


def test_a_fork_gets_the_values_published_before_its_fork_point(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            epoch = await started(store, "r1")
            await store.append_stream("r1", epoch, publish(0), publish_entry(0), NOW)
            await store.append_stream("r1", epoch, step_values(1, 1, [b"s1"]), [], NOW)
            await store.write_entries("r1", epoch, [entry(1)])
            await store.append_stream("r1", epoch, publish(2, "log"), publish_entry(2, "log"), NOW)
            close = StreamAppend("log", 0, 3, close=True)
            await store.append_stream(
                "r1", epoch, close, [entry(3, kind=CLOSE_STREAM, name="log", payload=None)], NOW
            )
            await store.append_stream("r1", epoch, publish(4), publish_entry(4), NOW)
            await store.create_run(new_run("f1"), owner=None, lease_expires=NOW, now=NOW)
            assert await store.copy_journal("r1", "f1", 4) == 4
            assert await store.copy_streams("r1", "f1", 4) == 3
            assert await values(store, "f1") == [(0, VALUE, b"v0", 0), (1, VALUE, b"s1", 0)]
            assert await values(store, "f1", "log") == [(0, VALUE, b"v2", 0)]
            heads = {
                s.name: (s.length, s.closed_at is not None) for s in await store.list_streams("f1")
            }
            assert heads == {"answer": (2, False), "log": (1, True)}

    run(body())


def test_streams_go_with_deleted_runs(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            epoch = await started(store, "r1")
            await store.append_stream("r1", epoch, publish(0), publish_entry(0), NOW)
            await store.finish_run(
                "r1", epoch, COMPLETED, output=b"", error=None, pending=[], now=NOW - 100
            )
            assert await store.delete_finished_runs(NOW - 50) == 1
            assert await store.list_streams("r1") == []
            assert await store.read_stream("r1", "answer", 0, 10) == StreamPage(None)
            await started(store, "r1")  # the id again: nothing of the old stream
            assert (await store.read_stream("r1", "answer", 0, 10)).length == 0

    run(body())
