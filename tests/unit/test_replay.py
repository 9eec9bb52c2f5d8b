"""Replay: recorded results come back without calling the step again."""

from __future__ import annotations

import pytest

import undying
from undying import App, Context, NonDeterminismError, StepFailed
from undying.testing import temp_app

calls: dict[str, int] = {}


def count(name: str) -> None:
    calls[name] = calls.get(name, 0) + 1


@undying.step
async def fetch(x: int) -> int:
    count("fetch")
    return x * 2


@undying.step
def sync_fetch(x: int) -> list[int]:
    count("sync_fetch")
    return [x, x]


def test_step_outside_workflow_is_a_plain_call() -> None:
    assert sync_fetch(3) == [3, 3]


def test_workflow_completes_and_replays_from_journal(db_path: str, run) -> None:  # type: ignore[no-untyped-def]
    calls.clear()
    app = temp_app(db_path)

    @app.workflow()
    async def agent(ctx: Context, n: int) -> dict[str, object]:
        a = await fetch(n)
        b = await sync_fetch(n)
        c = await ctx.step(fetch, a)
        return {"a": a, "b": b, "c": c, "t": ctx.now(), "r": ctx.random(), "u": ctx.uuid4()}

    async def main() -> tuple[object, object]:
        async with app:
            first = await (await app.start(agent, 5, run_id="r1")).result()
            again = await (await app.start(agent, 5, run_id="r1")).result()
            return first, again

    first, again = run(main())
    assert first == again
    assert first["a"] == 10 and first["b"] == [5, 5] and first["c"] == 20  # type: ignore[index]
    assert calls == {"fetch": 2, "sync_fetch": 1}


def test_raw_clock_in_workflow_is_caught_in_strict_mode(db_path: str, run) -> None:  # type: ignore[no-untyped-def]
    import time

    app = temp_app(db_path)

    @app.workflow()
    async def bad(ctx: Context) -> float:
        return time.time()

    async def main() -> None:
        async with app:
            with pytest.raises(NonDeterminismError, match=r"ctx\.now\(\)"):
                await (await app.start(bad)).result()

    run(main())


def test_step_failure_is_recorded_and_replayed(db_path: str, run) -> None:  # type: ignore[no-untyped-def]
    attempts = []

    @undying.step(retries=2, retry_delay=0.001)
    async def flaky() -> None:
        attempts.append(1)
        raise ValueError("boom")

    app = temp_app(db_path)

    @app.workflow()
    async def wf(ctx: Context) -> str:
        try:
            await flaky()
        except StepFailed as exc:
            return f"{exc.error_type}:{exc.message}:{exc.attempts}:{type(exc.__cause__).__name__}"
        return "no"

    async def main() -> object:
        async with app:
            return await (await app.start(wf, run_id="f1")).result()

    assert run(main()) == "builtins.ValueError:boom:3:ValueError"
    assert len(attempts) == 3


def test_app_run_sync(db_path: str) -> None:
    app = App(db_path)

    @app.workflow()
    async def hello(ctx: Context, who: str) -> str:
        return f"hello {who}"

    assert app.run(hello, "world") == "hello world"


def test_a_passing_database_failure_does_not_fail_the_run(db_path: str) -> None:
    import asyncio
    import sqlite3

    app = temp_app(db_path)

    @app.workflow()
    async def wf(ctx: Context) -> int:
        return await fetch(21)

    async def main() -> object:
        async with app:
            store = app.store
            real = store.write_entries
            failures = []

            async def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
                if not failures:  # the first journal write hits a locked database
                    failures.append(1)
                    raise sqlite3.OperationalError("database is locked")
                return await real(*args, **kwargs)

            store.write_entries = flaky  # type: ignore[method-assign]
            return await (await app.start(wf)).result(timeout=10)

    assert asyncio.run(main()) == 42
