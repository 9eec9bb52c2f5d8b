"""The storage contract, continued: the read side the CLI and the web UI use (filters, counts,
pages, workflows, events), on every store (see test_store_contract.py)."""

from __future__ import annotations

import pytest
from store_helpers import LEASE, NOW, MakeStore, entry, new_run, opened, run, started

from undying.errors import InvalidArgument
from undying.store.base import (
    COMPLETED,
    PENDING,
    RUN_STATUSES,
    RUNNING,
    EventRecord,
    ReadSide,
    RunFilter,
    RunRecord,
    Store,
    child_event_name,
)

# (run id, workflow, parent, created at NOW + ..., claimed at once)
RUNS = [
    ("trip-1", "book", None, 0, False),
    ("trip-2", "book", None, 10, True),
    ("chat-1", "chat", None, 20, False),
    ("trip-3", "chat", "trip-1", 30, True),
    ("chat-2", "book", None, 40, False),
]


def ids(runs: list[RunRecord]) -> list[str]:
    return [r.run_id for r in runs]


async def make_runs(store: Store) -> None:
    for rid, wf, parent, age, claimed in RUNS:
        await store.create_run(
            new_run(rid, workflow=wf, parent_id=parent),
            owner="w1" if claimed else None,
            lease_expires=LEASE,
            now=NOW + age,
        )


def test_list_runs_filters_by_age_and_id_text_and_pages(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            await make_runs(store)
            everything = ["chat-2", "trip-3", "chat-1", "trip-2", "trip-1"]
            assert ids(await store.list_runs(RunFilter())) == everything
            young = await store.list_runs(RunFilter(created_after=NOW + 20))
            assert ids(young) == ["chat-2", "trip-3", "chat-1"]  # at or after: chat-1 counts
            assert ids(await store.list_runs(RunFilter(run_id_contains="trip"))) == [
                "trip-3",
                "trip-2",
                "trip-1",
            ]
            assert ids(await store.list_runs(RunFilter(run_id_contains="TRIP"))) == []
            assert ids(await store.list_runs(RunFilter(run_id_contains="p-"))) == [
                "trip-3",
                "trip-2",
                "trip-1",
            ]
            both = RunFilter(workflow="book", run_id_contains="trip", created_after=NOW + 5)
            assert ids(await store.list_runs(both)) == ["trip-2"]
            running = RunFilter(status=RUNNING, run_id_contains="trip")
            assert ids(await store.list_runs(running)) == ["trip-3", "trip-2"]
            # pages of two, newest first, with nothing skipped or repeated
            pages = [
                ids(await store.list_runs(RunFilter(limit=2, offset=offset)))
                for offset in (0, 2, 4, 6)
            ]
            assert pages == [everything[0:2], everything[2:4], everything[4:], []]

    run(body())


def test_counts_by_status_follow_every_filter_but_status(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            assert await store.count_runs_by_status(RunFilter()) == {}
            await make_runs(store)
            epoch = 1  # trip-2 was created claimed
            await store.finish_run(
                "trip-2", epoch, COMPLETED, output=b"done", error=None, pending=[], now=NOW + 50
            )
            assert await store.count_runs_by_status(RunFilter()) == {
                PENDING: 3,
                RUNNING: 1,
                COMPLETED: 1,
            }
            # status, offset and limit are ignored: the counts sit beside a status filter
            ignored = RunFilter(status=COMPLETED, offset=3, limit=1)
            assert await store.count_runs_by_status(ignored) == {
                PENDING: 3,
                RUNNING: 1,
                COMPLETED: 1,
            }
            trips = RunFilter(run_id_contains="trip")
            assert await store.count_runs_by_status(trips) == {PENDING: 1, RUNNING: 1, COMPLETED: 1}
            book = RunFilter(workflow="book", created_after=NOW + 5)
            assert await store.count_runs_by_status(book) == {PENDING: 1, COMPLETED: 1}
            children = RunFilter(parent_id="trip-1")
            assert await store.count_runs_by_status(children) == {RUNNING: 1}

    run(body())


def test_list_workflows_names_each_workflow_once(make_store: MakeStore) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            assert await store.list_workflows() == []
            await make_runs(store)
            assert await store.list_workflows() == ["book", "chat"]

    run(body())


def test_list_events_shows_every_event_oldest_first_and_what_took_it(
    make_store: MakeStore,
) -> None:
    async def body() -> None:
        async with opened(make_store, "w1") as (store,):
            assert await store.list_events("missing") == []
            epoch = await started(store, "parent")
            await store.send_event("parent", "approval", b"yes", "k1", NOW + 1)
            assert not await store.send_event("parent", "approval", b"again", "k1", NOW + 2)
            await store.send_event("parent", "note", b"n1", None, NOW + 3)
            await store.send_event("parent", "approval", b"second", None, NOW + 4)
            taken = await store.take_event("parent", epoch, "approval", entry(5, kind="event"))
            assert taken == b"yes"
            child_epoch = await started(store, "kid", parent_id="parent")
            await store.finish_run(
                "kid", child_epoch, COMPLETED, output=b"x", error=None, pending=[], now=NOW + 6
            )
            events = await store.list_events("parent")
            assert events[:3] == [
                EventRecord("approval", "k1", b"yes", NOW + 1, 5),
                EventRecord("note", None, b"n1", NOW + 3, None),
                EventRecord("approval", None, b"second", NOW + 4, None),
            ]
            [child] = events[3:]  # a finished child tells its parent with an event
            assert (child.name, child.consumed_seq) == (child_event_name("kid"), None)
            assert [e.name for e in await store.list_events("parent", limit=2)] == [
                "approval",
                "note",
            ]
            assert await store.list_events("kid") == []

    run(body())


def test_run_filter_refuses_what_no_store_could_answer() -> None:
    for bad in (
        {"status": "done"},
        {"offset": -1},
        {"offset": 1.5},
        {"created_after": "yesterday"},
        {"run_id_contains": 42},
    ):
        with pytest.raises(InvalidArgument):
            RunFilter(**bad)  # type: ignore[arg-type]
    for status in RUN_STATUSES:
        RunFilter(status=status)


def test_the_read_side_has_no_write_methods() -> None:
    """Tools typed against ReadSide (the web UI) cannot reach the runtime's writes."""
    readable = {name for name in dir(ReadSide) if not name.startswith("_")}
    assert readable == {
        "get_run",
        "list_runs",
        "count_runs_by_status",
        "list_workflows",
        "load_journal_meta",
        "load_payloads",
        "get_blobs",
        "list_events",
        "wait_for_change",
        "load_usage",  # token totals of a run: a read
        "read_stream",  # a run's stream, from an offset
        "list_streams",
        "wait_for_activity",  # wait_for_change, stream appends included
        "list_schedules",  # schedules and their state (`undying schedules`)
    }
    assert issubclass(Store, ReadSide)
