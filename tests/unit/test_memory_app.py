"""Apps on ``memory://`` run agents as they do on a file: replay after a restart of the app,
events, durable sleeps, children, cancellation, transactions, several apps as several workers,
and the take-over of a dead worker's run. Each test opens its apps in successive event loops,
as the contract suite does, so nothing bound to one loop may leak into the shared database."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

import pytest

import undying
from undying import App, Context, StepFailed, WorkflowCancelled
from undying.errors import InvalidArgument, StoreError
from undying.store import store_from_url
from undying.store.base import NewRun
from undying.store.memory import MemoryStore, MemoryTransaction, drop_database
from undying.testing import replay_check, temp_app

calls: list[str] = []
BIG = "x" * 100_000  # chunked into blobs; its journal reference is loaded lazily on replay
MEDIUM = "y" * 2_000  # over the 512 bytes inlined with the journal metadata: deferred


@undying.step
async def remember(tag: str, size: int = 0) -> str:
    calls.append(tag)
    return tag + (BIG if size > 1000 else MEDIUM if size else "")


@pytest.fixture
def url() -> Iterator[str]:
    name = f"unit-{uuid.uuid4().hex[:12]}"
    yield f"memory://{name}"
    drop_database(name)


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def sleeper_app(url: str) -> App:
    app = temp_app(url, suspend_after=0.01)

    @app.workflow(name="sleeper")
    async def sleeper(ctx: Context) -> list[object]:
        big = await remember("big", 100_000)
        medium = await remember("medium", 1)
        started = ctx.now()
        await ctx.sleep(0.3)
        after = await remember("after")
        return [len(big), len(medium), started.year > 2000, after]

    return app


def test_run_replays_from_the_journal_after_the_app_restarts(url: str) -> None:
    calls.clear()

    async def first() -> None:
        app = sleeper_app(url)
        async with app:
            handle = await app.start("sleeper", run_id="s-1")
            await until(lambda: _status_is(handle, "waiting"))

    async def second() -> object:
        app = sleeper_app(url)  # another "process": a new worker id, a new event loop
        async with app:
            result = await app.handle("s-1").result(timeout=10)
            assert await replay_check(app) == []  # the journal alone replays the whole run
            return result

    asyncio.run(first())
    assert asyncio.run(second()) == [100_003, 2_006, True, "after"]
    assert calls == ["big", "medium", "after"]  # the first steps were not run again


async def _status_is(handle: undying.RunHandle, status: str) -> bool:
    return await handle.status() == status


def test_event_wakes_a_released_run_and_a_key_delivers_once(url: str) -> None:
    app = temp_app(url, suspend_after=0.01)

    @app.workflow()
    async def approve(ctx: Context) -> object:
        ctx.set_status("waiting for approval")
        return await ctx.wait_for_event("approval")

    async def main() -> object:
        async with app:
            handle = await app.start(approve, run_id="ev-1")
            await until(lambda: _status_is(handle, "waiting"))
            assert await app.get_status("ev-1") == "waiting for approval"
            assert await app.send_event("ev-1", "approval", {"ok": True}, key="k1")
            assert not await app.send_event("ev-1", "approval", {"ok": False}, key="k1")
            return await handle.result(timeout=10)

    assert asyncio.run(main()) == {"ok": True}


def test_children_return_and_cancel_ends_the_whole_tree(url: str) -> None:
    app = temp_app(url)

    @app.workflow()
    async def child(ctx: Context, n: int) -> int:
        if n < 0:
            await ctx.wait_for_event("never")
        return await ctx.step(lambda: n * 10)

    @app.workflow()
    async def parent(ctx: Context) -> list[int]:
        parts = await asyncio.gather(*(remember(str(i)) for i in range(3)))
        one = await ctx.call(child, 1)
        two = await (await ctx.start_child(child, 2)).result()
        return [len(parts), one, two]

    @app.workflow()
    async def stuck(ctx: Context) -> None:
        await ctx.call(child, -1)

    async def main() -> None:
        async with app:
            assert await (await app.start(parent, run_id="p")).result(timeout=10) == [3, 10, 20]
            handle = await app.start(stuck, run_id="c")
            await until(lambda: _exists(app, "c~0"))
            await app.cancel("c")
            for run_id in ("c", "c~0"):
                with pytest.raises(WorkflowCancelled):
                    await app.handle(run_id).result(timeout=10)
            assert await handle.status() == "cancelled"

    asyncio.run(main())


async def _exists(app: App, run_id: str) -> bool:
    return await app.store.get_run(run_id) is not None


def test_transaction_writes_commit_with_their_entry_only(url: str) -> None:
    ran: list[str] = []

    def add(tx: MemoryTransaction, key: str) -> int:
        ran.append(key)
        tx.set(key, tx.get(key, 0) + 1)
        if key == "bad":
            raise ValueError("refused")
        return int(tx.get(key))

    app = temp_app(url)

    @app.workflow()
    async def booking(ctx: Context) -> object:
        first = await ctx.transaction(add, "seat")
        try:
            await ctx.transaction(add, "bad")
        except ValueError as exc:
            return [first, str(exc)]
        return "no"

    async def main() -> object:
        async with app:
            out = await (await app.start(booking, run_id="b")).result(timeout=10)
            store = app.store
            assert isinstance(store, MemoryStore)
            assert store.db.app_data == {"seat": 1}  # the failed fn's write was rolled back
            return out

    assert asyncio.run(main()) == [1, "refused"]
    assert ran == ["seat", "bad"]


def test_apps_on_one_name_are_workers_and_clients_of_one_database(url: str) -> None:
    worker = temp_app(url)
    client = temp_app(url, worker=False)
    private = temp_app("memory://")

    @undying.step
    async def fail() -> None:
        raise RuntimeError("boom")

    for app in (worker, client, private):

        @app.workflow(name="double")
        async def double(ctx: Context, n: int) -> int:
            if n < 0:
                await fail()
            return await ctx.step(lambda: n * 2)

    async def main() -> None:
        async with worker, client, private:
            handle = await client.start("double", 21, run_id="d")  # executed by `worker`
            assert await handle.result(timeout=10) == 42
            with pytest.raises(StepFailed, match="boom"):
                await (await client.start("double", -1)).result(timeout=10)
            assert await private.store.get_run("d") is None  # memory:// is its own database

    asyncio.run(main())


def test_run_of_a_dead_worker_is_taken_over_at_once(url: str) -> None:
    app = temp_app(url, lease_ttl=600)

    @app.workflow(name="double")
    async def double(ctx: Context, n: int) -> int:
        return n * 2

    async def main() -> object:
        ghost = MemoryStore(url)
        await ghost.open("ghost")
        far = time.time() + 600  # its lease would hold for ten minutes
        run = NewRun("orphan", "double", app.codec.encode([[4], {}]))
        await ghost.create_run(run, owner="ghost", lease_expires=far, now=time.time())
        await ghost.close()  # the worker dies: its store is no longer open
        started = time.monotonic()
        async with app:
            result = await app.handle("orphan").result(timeout=10)
        assert time.monotonic() - started < 5
        return result

    assert asyncio.run(main()) == 8


def test_memory_urls_and_misuse_are_clear_errors(url: str) -> None:
    assert isinstance(store_from_url("memory://"), MemoryStore)
    assert store_from_url(url).url == url
    with pytest.raises(InvalidArgument, match="memory://"):
        MemoryStore("sqlite:///x.db")
    with pytest.raises(InvalidArgument, match="durability"):
        store_from_url(url, durability="fast")
    with pytest.raises(InvalidArgument, match="memory://"):
        store_from_url("redis://localhost")

    async def main() -> None:
        store = MemoryStore(url)
        with pytest.raises(StoreError, match="not open"):
            await store.get_run("r")
        with pytest.raises(StoreError, match="not open"):
            await store.wait_for_change(0)
        await store.open("w1")
        try:
            with pytest.raises(StoreError, match="already in use"):
                await MemoryStore(url).open("w1")
        finally:
            await store.close()
        assert await MemoryStore(url).migrate() == []

    asyncio.run(main())
    assert drop_database(url[len("memory://") :])
    assert not drop_database("never-made")
