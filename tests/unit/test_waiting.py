"""Agents that wait: durable sleeps, events, children, races, cancellation, fork, restarts."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

import undying
from undying import App, Context, EventTimeout, WorkflowCancelled
from undying.testing import eventually, executing_here, temp_app, wait_for_status

executed: list[str] = []


@undying.step
async def record(tag: str) -> str:
    executed.append(tag)
    return tag


def test_event_sent_before_wait_is_not_lost(db_path: str) -> None:
    app = temp_app(db_path)

    @app.workflow()
    async def approve(ctx: Context) -> object:
        await ctx.sleep(0.05)
        return await ctx.wait_for_event("approval", timeout=timedelta(seconds=30))

    async def main() -> object:
        async with app:
            handle = await app.start(approve, run_id="ev-1")
            assert await app.send_event("ev-1", "approval", {"ok": True}, key="k1")
            assert not await app.send_event("ev-1", "approval", {"ok": False}, key="k1")
            return await handle.result(timeout=10)

    assert asyncio.run(main()) == {"ok": True}


def test_long_wait_releases_run_and_event_resumes_it(db_path: str) -> None:
    executed.clear()
    app = temp_app(db_path, suspend_after=0.05)

    @app.workflow()
    async def agent(ctx: Context) -> object:
        await record("before")
        ctx.set_status({"phase": "waiting for approval"})
        answer = await ctx.wait_for_event("approval")
        await record("after")
        return answer

    async def main() -> object:
        async with app:
            handle = await app.start(agent, run_id="wait-1")
            await wait_for_status(handle, "waiting")
            assert await handle.status() == "waiting"
            assert await app.get_status("wait-1") == {"phase": "waiting for approval"}
            assert "wait-1" not in executing_here(app)  # no coroutine held while waiting
            await app.send_event("wait-1", "approval", "yes")
            return await handle.result(timeout=10)

    assert asyncio.run(main()) == "yes"
    assert executed == ["before", "after"]  # replay did not re-run the first step


def test_event_timeout(db_path: str) -> None:
    app = temp_app(db_path)

    @app.workflow()
    async def wf(ctx: Context) -> str:
        try:
            await ctx.wait_for_event("never", timeout=0.05)
        except EventTimeout:
            return "timed out"
        return "no"

    async def main() -> object:
        async with app:
            return await (await app.start(wf)).result(timeout=10)

    assert asyncio.run(main()) == "timed out"


def test_durable_sleep_survives_restart_of_app(db_path: str) -> None:
    executed.clear()

    def make() -> undying.App:
        app = temp_app(db_path, suspend_after=0.01)

        @app.workflow(name="sleeper")
        async def sleeper(ctx: Context) -> str:
            await record("a")
            await ctx.sleep(0.3)
            await record("b")
            return "done"

        return app

    async def first() -> None:
        app = make()
        async with app:
            handle = await app.start("sleeper", run_id="s-1")
            await wait_for_status(handle, "waiting")
            assert await handle.status() == "waiting"

    async def second() -> object:
        app = make()
        async with app:
            return await app.handle("s-1").result(timeout=10)

    asyncio.run(first())
    assert asyncio.run(second()) == "done"
    assert executed == ["a", "b"]


def test_child_workflows_and_parallel_steps(db_path: str) -> None:
    app = temp_app(db_path)

    @app.workflow()
    async def child(ctx: Context, n: int) -> int:
        return await ctx.step(lambda: n * 10)

    @app.workflow()
    async def parent(ctx: Context) -> list[int]:
        values = await asyncio.gather(*(record(str(i)) for i in range(5)))
        one = await ctx.call(child, 1)
        handle = await ctx.start_child(child, 2)
        two = await handle.result()
        return [len(values), one, two]

    async def main() -> object:
        async with app:
            out = await (await app.start(parent, run_id="p")).result(timeout=10)
            kids = await app.list_runs()
            return out, sorted(r.run_id for r in kids)

    out, ids = asyncio.run(main())
    assert out == [5, 10, 20]
    assert ids == ["p", "p~5", "p~6"]


def test_cancel_waiting_run_and_children(db_path: str) -> None:
    app = temp_app(db_path)

    @app.workflow()
    async def child(ctx: Context) -> None:
        await ctx.wait_for_event("go")

    @app.workflow()
    async def parent(ctx: Context) -> None:
        await ctx.call(child)

    async def main() -> tuple[str, str]:
        async with app:
            handle = await app.start(parent, run_id="c")
            await eventually(app, lambda: _exists(app, "c~0"), what="the child's creation")
            await app.cancel("c")
            with pytest.raises(WorkflowCancelled):
                await handle.result(timeout=10)
            with pytest.raises(WorkflowCancelled):
                await app.handle("c~0").result(timeout=10)
            return await handle.status(), await app.handle("c~0").status()

    assert asyncio.run(main()) == ("cancelled", "cancelled")


def test_deadline_cancels_run(db_path: str) -> None:
    app = temp_app(db_path)

    @app.workflow()
    async def slow(ctx: Context) -> None:
        await ctx.wait_for_event("never")

    async def main() -> None:
        async with app:
            handle = await app.start(slow, timeout=0.1)
            with pytest.raises(WorkflowCancelled):
                await handle.result(timeout=10)

    asyncio.run(main())


def test_fork_reuses_first_steps(db_path: str) -> None:
    executed.clear()
    app = temp_app(db_path)

    @app.workflow()
    async def three(ctx: Context) -> list[str]:
        return [await record("1"), await record("2"), await record("3")]

    async def main() -> object:
        async with app:
            await (await app.start(three, run_id="orig")).result(timeout=10)
            forked = await app.fork("orig", from_step=2)
            return await forked.result(timeout=10)

    assert asyncio.run(main()) == ["1", "2", "3"]
    assert executed == ["1", "2", "3", "3"]


def test_continue_as_new_keeps_journal_small(db_path: str) -> None:
    app = temp_app(db_path)

    @app.workflow()
    async def loop(ctx: Context, n: int) -> int:
        await ctx.step(lambda: n)
        if n < 3:
            ctx.continue_as_new(n + 1)
        return n

    async def main() -> tuple[object, int, int]:
        async with app:
            out = await (await app.start(loop, 0, run_id="forever")).result(timeout=10)
            meta = await app.store.load_journal_meta("forever")
            run = await app.store.get_run("forever")
            assert run is not None
            return out, len(meta), run.generation

    assert asyncio.run(main()) == (3, 1, 3)


def test_wait_first_and_patched(db_path: str) -> None:
    app = temp_app(db_path)

    @undying.step
    async def fast() -> str:
        return "fast"

    @undying.step
    async def slow() -> str:
        await asyncio.sleep(5)
        return "slow"

    @app.workflow()
    async def race(ctx: Context) -> object:
        index, value = await ctx.wait_first(slow(), fast())
        return [index, value, ctx.patched("v2")]

    async def main() -> object:
        async with app:
            first = await (await app.start(race, run_id="race")).result(timeout=10)
            recorded = len(await app.store.load_journal_meta("race"))
            forked = await app.fork("race", from_step=recorded)  # reuse every entry
            return first, await forked.result(timeout=10)

    first, replayed = asyncio.run(main())
    assert first == [1, "fast", True]
    assert replayed == first


def test_client_follows_progress_with_watch(db_path: str) -> None:
    app = temp_app(db_path)

    @app.workflow()
    async def phases(ctx: Context) -> str:
        ctx.set_status("searching")
        await ctx.wait_for_event("next")
        ctx.set_status("writing")
        await record("w")
        return "done"

    async def main() -> list[tuple[str, object]]:
        async with app:
            handle = await app.start(phases, run_id="watch-1")
            seen: list[tuple[str, object]] = []
            async for state in handle.watch():
                seen.append(state)
                if state[1] == "searching":
                    await app.send_event("watch-1", "next", key="once")
            return seen

    seen = asyncio.run(main())
    assert any(value == "searching" for _, value in seen)
    assert seen[-1][0] == "completed"
    assert any(value == "writing" for _, value in seen)


def test_idempotency_keys_differ_across_generations_and_big_events_replay(db_path: str) -> None:
    app = temp_app(db_path)
    keys: list[str] = []

    @undying.step
    async def charge() -> None:
        keys.append(undying.idempotency_key())

    @app.workflow()
    async def billing(ctx: Context, period: int) -> object:
        await charge()
        if period < 2:
            ctx.continue_as_new(period + 1)
        return await ctx.wait_for_event("big")

    async def main() -> tuple[object, object]:
        async with app:
            handle = await app.start(billing, 0, run_id="bill")
            await app.send_event("bill", "big", "x" * 600)
            first = await handle.result(timeout=10)
            forked = await app.fork("bill", from_step=2)
            return first, await forked.result(timeout=10)

    first, replayed = asyncio.run(main())
    assert keys[:3] == ["bill:0", "bill#1:0", "bill#2:0"]
    assert first == replayed == "x" * 600


def test_sleep_until_and_lineage(db_path: str) -> None:
    from datetime import UTC, datetime

    app = temp_app(db_path)

    @app.workflow()
    async def wake(ctx: Context, rounds: int) -> str:
        await ctx.sleep_until(datetime(2000, 1, 1, tzinfo=UTC))  # in the past: returns at once
        await ctx.sleep_until(ctx.now() + timedelta(milliseconds=30))
        if rounds:
            ctx.continue_as_new(rounds - 1)
        return "awake"

    async def main() -> tuple[object, int]:
        async with app:
            out = await (await app.start(wake, 2, run_id="wake")).result(timeout=10)
            db = app.store.db  # type: ignore[attr-defined]
            (generations,) = db.execute(
                "SELECT count(*) FROM lineage WHERE run_id = 'wake'"
            ).fetchone()
            return out, generations

    assert asyncio.run(main()) == ("awake", 2)
    with pytest.raises(undying.InvalidArgument, match="timezone-aware"):
        asyncio.run(_naive_sleep(db_path))


async def _naive_sleep(db_path: str) -> None:
    from datetime import datetime

    app = temp_app(db_path)

    @app.workflow()
    async def naive(ctx: Context) -> None:
        await ctx.sleep_until(datetime(2000, 1, 1))

    async with app:
        await (await app.start(naive)).result(timeout=10)


def test_handle_follows_a_run_that_ends_elsewhere(db_path: str) -> None:
    app = temp_app(db_path, suspend_after=0.0)

    @app.workflow()
    async def idle(ctx: Context) -> None:
        await ctx.wait_for_event("never")

    async def main() -> None:
        async with app:
            handle = await app.start(idle, run_id="away")
            await wait_for_status(handle, "waiting")
            other = temp_app(db_path, worker=False)
            async with other:
                waiter = asyncio.ensure_future(handle.result())
                await other.cancel("away")  # ended by another process, not by this worker
                with pytest.raises(WorkflowCancelled):
                    await asyncio.wait_for(waiter, 10)

    asyncio.run(main())


def test_deadline_cancels_children_and_cancel_right_after_start(db_path: str) -> None:
    app = temp_app(db_path)

    @app.workflow()
    async def child(ctx: Context) -> None:
        await ctx.wait_for_event("never")

    @app.workflow()
    async def parent(ctx: Context) -> None:
        await ctx.call(child)

    async def main() -> tuple[str, str, str]:
        async with app:
            handle = await app.start(parent, run_id="dl", timeout=0.3)
            with pytest.raises(WorkflowCancelled):
                await handle.result(timeout=10)
            kid = app.handle("dl~0")
            with pytest.raises(WorkflowCancelled):
                await kid.result(timeout=10)
            quick = await app.start(child, run_id="quick")
            await app.cancel("quick")
            with pytest.raises(WorkflowCancelled):
                await quick.result(timeout=10)
            return await handle.status(), await kid.status(), await quick.status()

    assert asyncio.run(main()) == ("cancelled", "cancelled", "cancelled")


def test_children_of_later_generations_get_new_ids(db_path: str) -> None:
    app = temp_app(db_path)

    @app.workflow()
    async def square(ctx: Context, n: int) -> int:
        return n * n

    @app.workflow()
    async def loop(ctx: Context, n: int, acc: list[int]) -> list[int]:
        acc = [*acc, await ctx.call(square, n)]
        if n < 3:
            ctx.continue_as_new(n + 1, acc)
        return acc

    async def main() -> object:
        async with app:
            return await (await app.start(loop, 1, [], run_id="sq")).result(timeout=10)

    assert asyncio.run(main()) == [1, 4, 9]


def test_race_a_step_against_a_timer_and_parallel_sleeps_replay(db_path: str) -> None:
    import time as clock

    app = temp_app(db_path, suspend_after=0.05)

    @undying.step
    async def quick() -> str:
        return "answer"

    @app.workflow()
    async def race(ctx: Context) -> object:
        index, value = await ctx.wait_first(quick(), ctx.sleep(60))
        await asyncio.gather(ctx.sleep(0.3), ctx.sleep(0.3))
        after = await quick()
        return [index, value, after]

    async def main() -> tuple[object, object, float]:
        async with app:
            t0 = clock.perf_counter()
            first = await (await app.start(race, run_id="rc")).result(timeout=10)
            elapsed = clock.perf_counter() - t0
            recorded = len(await app.store.load_journal_meta("rc"))
            forked = await app.fork("rc", from_step=recorded)  # reuse every entry
            return first, await forked.result(timeout=10), elapsed

    first, replayed, elapsed = asyncio.run(main())
    assert first == replayed == [0, "answer", "answer"]
    assert elapsed < 0.6 + 1.0  # the two sleeps ran side by side, not one after the other


async def _exists(app: App, run_id: str) -> bool:
    return await app.store.get_run(run_id) is not None
