"""Durable streams through the public API: ctx.publish, undying.publish in steps, and
app.read_stream, on a real SQLite file (the stores themselves: tests/contract)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import undying
from undying import App, Context, StreamRetry
from undying.errors import InvalidArgument, RunNotFound, SerializationError, StreamClosed
from undying.testing import replay_check, temp_app


async def read_all(app: App, run_id: str, stream: str, offset: int = 0) -> list[Any]:
    return [v async for v in app.read_stream(run_id, stream, offset=offset)]


def test_values_arrive_in_order_and_a_replay_publishes_none_again(app: App, run: Any) -> None:
    @app.workflow(name="replayed")
    async def replayed(ctx: Context) -> str:
        for i in range(3):
            await ctx.publish("numbers", i)
        await ctx.publish("numbers", {"then": ctx.now().year > 2000})
        return str(await ctx.wait_for_event("go"))

    async def body() -> None:
        async with app:
            handle = await app.start(replayed, run_id="r1")
            first: list[Any] = []
            async for value in app.read_stream("r1", "numbers"):
                first.append(value)
                if len(first) == 4:
                    break
        # The worker stopped (the run handed back); a new one replays it from the start.
        async with app:
            await app.send_event("r1", "go", "went")
            assert await handle.result(timeout=10) == "went"
            assert await read_all(app, "r1", "numbers") == first == [0, 1, 2, {"then": True}]
            assert await read_all(app, "r1", "numbers", offset=3) == [{"then": True}]
            assert await read_all(app, "r1", "numbers", offset=9) == []
            kinds = [(e.kind, e.name) for e in await app.store.load_journal_meta("r1")]
            publish = ("publish", "numbers")
            assert kinds[:5] == [publish, publish, publish, ("now", "now"), publish]
            assert (await app.store.get_run("r1")).epoch == 2  # type: ignore[union-attr]
            assert await replay_check(app) == []

    run(body())


def test_a_reader_follows_a_running_run_and_ends_with_it(app: App, run: Any) -> None:
    @app.workflow(name="talker")
    async def talker(ctx: Context, fail: bool) -> None:
        for word in ("a", "b"):
            await ctx.publish("words", word)
            await ctx.wait_for_event("next")
        if fail:
            raise ValueError("boom")

    async def body() -> None:
        async with app:
            for run_id, fail in (("ok", False), ("bad", True)):
                await app.start(talker, fail, run_id=run_id)
                seen: list[Any] = []

                async def follow(run_id: str = run_id, seen: list[Any] = seen) -> None:
                    async for word in app.read_stream(run_id, "words"):
                        seen.append(word)
                        await app.send_event(run_id, "next")

                # Ends because the run ended; woken by each publish, not by the readers'
                # 5-second refresh (two waits), so well within 4 s.
                await asyncio.wait_for(follow(), 4)
                assert seen == ["a", "b"]
            assert (await app.handle("bad").status()) == "failed"

    run(body())


@pytest.mark.parametrize("reader", ["same app", "client app"])
def test_a_reader_is_woken_by_each_value(tmp_path: Path, run: Any, reader: str) -> None:
    """In the writer's App (in-process signal) or in a client App on the same file (think: a
    chat server process; the store's change notification), a reader is woken by each
    publish, not by its 5-second refresh: four values, each published only after the reader
    took the one before, well within 4 seconds."""
    db = str(tmp_path / "shared.db")
    worker = temp_app(db)
    gate: asyncio.Queue[None] = asyncio.Queue()

    @undying.step
    async def wait_for_reader() -> None:
        await gate.get()

    @worker.workflow(name="slow_talker")
    async def slow_talker(ctx: Context) -> None:
        for i in range(4):
            await ctx.publish("ticks", i)
            await wait_for_reader()

    async def follow(app: App) -> list[Any]:
        seen: list[Any] = []
        async for tick in app.read_stream("t1", "ticks"):
            seen.append(tick)
            gate.put_nowait(None)  # the next value is published only now
        return seen

    async def body() -> None:
        async with worker, App(db, worker=False) as client:
            await worker.start(slow_talker, run_id="t1")
            app = worker if reader == "same app" else client
            assert await asyncio.wait_for(follow(app), 4) == [0, 1, 2, 3]

    run(body())


def test_a_step_retried_publishes_a_marker_before_its_new_values(app: App, run: Any) -> None:
    calls: list[int] = []

    @undying.step(retries=1, retry_delay=0)
    async def speak() -> str:
        calls.append(1)
        await undying.publish("answer", "hel")
        await undying.publish("answer", "lo")
        if len(calls) == 1:
            raise ConnectionError("cut")
        await undying.publish("answer", "!")
        return "hello!"

    @app.workflow(name="speaker")
    async def speaker(ctx: Context) -> str:
        await ctx.publish("answer", ">")
        said = await speak()
        await ctx.close_stream("answer")
        return said

    async def body() -> None:
        async with app:
            handle = await app.start(speaker, run_id="s1")
            assert await handle.result(timeout=10) == "hello!"
            seen = await read_all(app, "s1", "answer")
            assert await replay_check(app) == []
        retry = StreamRetry(speak.__undying_step__.name, 1, 2, 2)  # type: ignore[attr-defined]
        assert seen == [">", "hel", "lo", retry, "hel", "lo", "!"]

    run(body())


def test_parallel_steps_publish_to_one_stream_without_losing_a_value(app: App, run: Any) -> None:
    @undying.step
    async def count(name: str) -> None:
        for i in range(20):
            await undying.publish("log", f"{name}{i}")

    @app.workflow(name="parallel")
    async def parallel(ctx: Context) -> None:
        await asyncio.gather(*(count(n) for n in "abc"))

    async def body() -> None:
        async with app:
            await (await app.start(parallel, run_id="p1")).result(timeout=10)
            seen = await read_all(app, "p1", "log")
        assert sorted(seen) == sorted(f"{n}{i}" for n in "abc" for i in range(20))
        for n in "abc":
            assert [v for v in seen if v[0] == n] == [f"{n}{i}" for i in range(20)]

    run(body())


def test_streams_span_generations_and_are_copied_to_a_fork(app: App, run: Any) -> None:
    @app.workflow(name="looper")
    async def looper(ctx: Context, turn: int) -> int:
        await ctx.publish("turns", turn)
        if turn < 2:
            ctx.continue_as_new(turn + 1)
        return turn

    async def body() -> None:
        async with app:
            assert await (await app.start(looper, 0, run_id="l1")).result(timeout=10) == 2
            assert await read_all(app, "l1", "turns") == [0, 1, 2]
            fork = await app.fork("l1", from_step=1)  # the last generation, replayed
            assert await fork.result(timeout=10) == 2
            assert await read_all(app, fork.run_id, "turns") == [2]

    run(body())


def test_a_closed_stream_refuses_publishes_and_its_readers_end(app: App, run: Any) -> None:
    @app.workflow(name="closer")
    async def closer(ctx: Context) -> str:
        await ctx.publish("s", 1)
        await ctx.close_stream("s")
        await ctx.close_stream("s")  # closing twice is closing once
        try:
            await ctx.publish("s", 2)
        except StreamClosed as exc:
            return str(exc)
        return "published"

    async def body() -> None:
        async with app:
            handle = await app.start(closer, run_id="c1")
            assert "closed by ctx.close_stream" in await handle.result(timeout=10)
            assert await read_all(app, "c1", "s") == [1]

    run(body())


def test_bad_input_gets_a_clear_error_and_writes_nothing(app: App, run: Any) -> None:
    @undying.step
    async def closes(ctx: Context) -> None:
        await ctx.close_stream("s")

    @undying.step
    def sync_publisher() -> None:
        undying.publish("s", 1)

    @app.workflow(name="bad")
    async def bad(ctx: Context, case: str) -> str:
        try:
            if case == "name":
                await ctx.publish("", 1)
            elif case == "value":
                await ctx.publish("s", object())
            elif case == "big":
                await ctx.publish("s", "x" * (300 << 10))
            elif case == "close-in-step":
                await closes(ctx)
            elif case == "sync-step":
                await sync_publisher()
        except (InvalidArgument, SerializationError, undying.StepFailed) as exc:
            return f"{type(exc).__name__}: {exc}"
        return "no error"

    async def body() -> None:
        async with app:
            outcomes = {}
            for case in ("name", "value", "big", "close-in-step", "sync-step"):
                handle = await app.start(bad, case, run_id=case)
                outcomes[case] = await handle.result(timeout=10)
            assert "malformed stream name ''" in outcomes["name"]
            assert outcomes["value"].startswith("SerializationError")
            assert "over the 262144-byte limit" in outcomes["big"]
            assert "from workflow code, not from a step" in outcomes["close-in-step"]
            assert "publish from an async step" in outcomes["sync-step"]
            for case in outcomes:
                assert await app.store.list_streams(case) == []
            with pytest.raises(InvalidArgument, match="needs a run to publish to"):
                undying.publish("s", 1)
            for offset in (-1, 1.5, True):
                with pytest.raises(InvalidArgument, match="a stream offset"):
                    app.read_stream("name", "s", offset=offset)  # type: ignore[arg-type]
            with pytest.raises(InvalidArgument, match="malformed stream name"):
                app.read_stream("name", "bad\nname")
            with pytest.raises(InvalidArgument, match="malformed run id"):
                app.read_stream("no/such", "s")
            with pytest.raises(RunNotFound):
                await read_all(app, "nosuchrun", "s")
            # A finished run's stream it never published to: nothing, at once.
            assert await asyncio.wait_for(read_all(app, "name", "never"), 1) == []

    run(body())
