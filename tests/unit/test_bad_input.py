"""Bad input gets a clear undying error, and nothing already journaled is lost or rewritten."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import warnings
from datetime import datetime  # noqa: F401  (the strict-mode test evaluates datetime.now())

import pytest

import undying
from undying import (
    App,
    ArgumentDigestChanged,
    Context,
    InvalidArgument,
    NonDeterminismError,
    RunNotFound,
    SerializationError,
    UnknownWorkflow,
)
from undying.testing import temp_app, wait_for_status


@undying.step
async def echo(value: object) -> object:
    return value


def test_workflow_must_be_async(db_path: str) -> None:
    app = temp_app(db_path)
    with pytest.raises(InvalidArgument, match="async def"):

        @app.workflow()
        def not_async(ctx: Context) -> None: ...


@pytest.mark.parametrize("bad", ["", "has space", "../etc", "x" * 201, 42, "-lead"])
def test_malformed_run_id(db_path: str, bad: object) -> None:
    app = temp_app(db_path)

    @app.workflow()
    async def wf(ctx: Context) -> None: ...

    async def main() -> None:
        async with app:
            with pytest.raises(InvalidArgument, match="run id"):
                await app.start(wf, run_id=bad)  # type: ignore[arg-type]

    asyncio.run(main())


def test_unknown_names_and_runs(db_path: str) -> None:
    app = temp_app(db_path)

    async def main() -> None:
        async with app:
            with pytest.raises(UnknownWorkflow, match="no workflow named 'nope'"):
                await app.start("nope")
            with pytest.raises(RunNotFound):
                await app.send_event("missing", "e", 1)
            with pytest.raises(RunNotFound):
                await app.handle("missing").result()

    asyncio.run(main())


@pytest.mark.parametrize("from_step", [4, 10**30])
def test_fork_beyond_the_journal_names_the_valid_range(db_path: str, from_step: int) -> None:
    app = temp_app(db_path)

    @app.workflow()
    async def three(ctx: Context) -> int:
        for i in range(3):
            await echo(i)
        return 3

    async def main() -> list[str]:
        async with app:
            await (await app.start(three, run_id="three")).result(timeout=10)
            with pytest.raises(InvalidArgument, match=r"holds positions 0\.\.2: use 0\.\.3"):
                await app.fork("three", from_step=from_step, new_run_id="three-fork")
            forked = await app.fork("three", from_step=3)  # the whole journal is fine
            assert await forked.result(timeout=10) == 3
            return [r.run_id for r in await app.list_runs()]

    runs = asyncio.run(main())
    assert "three-fork" not in runs and len(runs) == 2  # the refused fork created nothing


def test_unserializable_argument_names_its_path(db_path: str) -> None:
    app = temp_app(db_path)

    @app.workflow()
    async def wf(ctx: Context, docs: object) -> None: ...

    async def main() -> None:
        async with app:
            with pytest.raises(SerializationError, match=r"\[3\]"):
                await app.start(wf, {"docs": [1, 2, 3, object()]})

    asyncio.run(main())


def test_unserializable_step_result_fails_clearly_and_replays_the_same(db_path: str) -> None:
    app = temp_app(db_path)

    @app.workflow()
    async def wf(ctx: Context) -> str:
        try:
            await echo({"docs": [0, 1, 2, object()]})
        except SerializationError as exc:
            return str(exc)
        return "no"

    async def main() -> object:
        async with app:
            return await (await app.start(wf, run_id="ser")).result()

    message = asyncio.run(main())
    assert '["docs"][3]' in str(message)


def test_unknown_workflow_in_journal_fails_run_without_touching_journal(db_path: str) -> None:
    first = temp_app(db_path, suspend_after=0.0)

    @first.workflow(name="old-agent")
    async def old(ctx: Context) -> None:
        await echo(1)
        await ctx.sleep(3600)

    async def start() -> None:
        async with first:
            handle = await first.start("old-agent", run_id="orphan")
            await wait_for_status(handle, "waiting")

    asyncio.run(start())
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE runs SET wake_at = 0 WHERE run_id = 'orphan'")
        before = db.execute("SELECT * FROM journal ORDER BY seq").fetchall()

    second = temp_app(db_path)

    async def recover() -> None:
        async with second:
            with pytest.raises(UnknownWorkflow, match="old-agent"):
                await second.handle("orphan").result(timeout=10)

    asyncio.run(recover())
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT * FROM journal ORDER BY seq").fetchall() == before


def test_corrupt_payload_row_is_a_clear_error(db_path: str) -> None:
    app = temp_app(db_path)

    @app.workflow(name="wf")
    async def wf(ctx: Context) -> object:
        first = await echo({"a": 1})
        await ctx.wait_for_event("go")
        return first

    async def start() -> None:
        async with app:
            handle = await app.start("wf", run_id="corrupt")
            await wait_for_status(handle, "waiting")

    asyncio.run(start())
    with sqlite3.connect(db_path) as db:
        (payload,) = db.execute("SELECT payload FROM journal WHERE seq = 0").fetchone()
        broken = bytes(payload[:-1]) + bytes([payload[-1] ^ 0xFF])
        db.execute("UPDATE journal SET payload = ? WHERE seq = 0", (broken,))

    async def resume() -> None:
        async with app:
            await app.send_event("corrupt", "go")
            with pytest.raises(SerializationError):
                await app.handle("corrupt").result(timeout=10)

    asyncio.run(resume())
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT payload FROM journal WHERE seq = 0").fetchone()[0] == broken


def test_changed_code_raises_nondeterminism_naming_position(db_path: str) -> None:
    def make(second_step: bool) -> App:
        app = temp_app(db_path, suspend_after=0.0)

        @undying.step
        async def search() -> int:
            return 1

        @undying.step
        async def browse() -> int:
            return 2

        @app.workflow(name="agent")
        async def agent(ctx: Context) -> int:
            await echo(0)
            await (browse() if second_step else search())
            await ctx.wait_for_event("go")
            return 0

        return app

    async def start() -> None:
        app = make(False)
        async with app:
            handle = await app.start("agent", run_id="nd")
            await wait_for_status(handle, "waiting")

    async def resume() -> None:
        app = make(True)
        async with app:
            await app.send_event("nd", "go")
            with pytest.raises(NonDeterminismError, match=r"position 1.*search.*browse"):
                await app.handle("nd").result(timeout=10)

    asyncio.run(start())
    asyncio.run(resume())


def test_changed_arguments_warn_by_default(db_path: str) -> None:
    def make(prompt: str) -> App:
        app = App(db_path, suspend_after=0.0)

        @app.workflow(name="agent")
        async def agent(ctx: Context) -> object:
            out = await echo(prompt)
            await ctx.wait_for_event("go")
            return out

        return app

    async def start() -> None:
        app = make("old prompt")
        async with app:
            handle = await app.start("agent", run_id="dg")
            await wait_for_status(handle, "waiting")

    async def resume() -> object:
        app = make("new prompt")
        async with app:
            await app.send_event("dg", "go")
            return await app.handle("dg").result(timeout=10)

    asyncio.run(start())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert asyncio.run(resume()) == "old prompt"
    assert any(issubclass(w.category, ArgumentDigestChanged) for w in caught)


def test_strict_mode_leaves_logging_and_steps_alone(
    db_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    import random
    import time

    app = temp_app(db_path)
    log = logging.getLogger("agent")

    @undying.step
    def roll() -> float:
        return random.random() + time.time() * 0

    @app.workflow()
    async def wf(ctx: Context) -> float:
        log.warning("starting")  # logging reads the clock: allowed
        return await roll()  # raw random inside a step: allowed

    async def main() -> object:
        async with app:
            return await (await app.start(wf)).result()

    with caplog.at_level(logging.WARNING):
        value = asyncio.run(main())
    assert 0 <= value < 1  # type: ignore[operator]
    assert "starting" in caplog.text


@pytest.mark.parametrize(
    "call, hint",
    [
        ("__import__('random').random()", "ctx.random"),
        ("__import__('uuid').uuid4()", "ctx.uuid4"),
        ("__import__('os').urandom(4)", "ctx.random"),
        ("datetime.now()", "ctx.now"),
    ],
)
def test_strict_mode_catches_raw_calls(db_path: str, call: str, hint: str) -> None:
    app = temp_app(db_path)

    @app.workflow()
    async def wf(ctx: Context) -> object:
        return eval(call)

    async def main() -> None:
        async with app:
            with pytest.raises(NonDeterminismError, match=hint):
                await (await app.start(wf)).result()

    asyncio.run(main())
