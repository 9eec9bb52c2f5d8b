"""BaseExceptions out of steps and workflows, and the quarantine, inside one process.

The real-process versions (SystemExit, a library's CancelledError, os._exit) are in
tests/acceptance/test_poison_runs.py; these pin down what must still propagate (the run's own
cancellation, a timeout around a call) and the worker's quarantine decision.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

import undying
from undying import App, Context, InvalidArgument, RunQuarantined, StepFailed, WorkflowCancelled
from undying.store.base import NewRun
from undying.store.sqlite import SQLiteStore
from undying.testing import temp_app

entered: list[str] = []


@undying.step(retries=2, retry_delay=0.01)
async def interrupted() -> str:
    entered.append("interrupted")
    raise KeyboardInterrupt("raised by a tool, not by Ctrl-C")


@undying.step
async def slow() -> str:
    entered.append("slow")
    await asyncio.sleep(30)
    return "late"


@undying.step(timeout=0.05, retries=1, retry_delay=0.01)
async def too_slow() -> str:
    entered.append("too_slow")
    await asyncio.sleep(30)
    return "late"


@undying.step
async def cancels_the_run() -> str:
    raise WorkflowCancelled("raised inside a step")


async def _outcome(app: App, workflow: object, run_id: str) -> object:
    async with app:
        return await (await app.start(workflow, run_id=run_id)).result()


def _journal(db_path: str, run_id: str) -> list[tuple[int, str]]:
    conn = sqlite3.connect(db_path)
    try:
        rows = conn.execute(
            "SELECT seq, status FROM journal WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()
        return [(int(seq), str(status)) for seq, status in rows]
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("step", "failure", "attempts"),
    [(interrupted, "builtins.KeyboardInterrupt", 1), (too_slow, "builtins.TimeoutError", 2)],
)
def test_a_keyboard_interrupt_is_the_step_failure_without_the_retries_a_timeout_gets(
    db_path: str,
    run,  # type: ignore[no-untyped-def]
    step: object,
    failure: str,
    attempts: int,
) -> None:
    entered.clear()
    app = temp_app(db_path)

    @app.workflow()
    async def wf(ctx: Context) -> str:
        try:
            return str(await ctx.step(step))  # type: ignore[arg-type]
        except StepFailed as exc:
            return f"{exc.error_type} after {exc.attempts}"

    assert run(_outcome(app, wf, "f")) == f"{failure} after {attempts}"
    assert len(entered) == attempts
    assert _journal(db_path, "f") == [(0, "error")]


def test_a_timeout_around_a_step_still_cancels_it_without_recording_it(db_path: str, run) -> None:  # type: ignore[no-untyped-def]
    """The run's own cancellation (here asyncio.timeout in workflow code) propagates through
    the step: no failure is recorded, so a replay runs the step again."""
    entered.clear()
    app = temp_app(db_path)

    @app.workflow()
    async def wf(ctx: Context) -> str:
        try:
            async with asyncio.timeout(0.05):
                return await slow()
        except TimeoutError:
            return "gave up"

    assert run(_outcome(app, wf, "t")) == "gave up"
    assert _journal(db_path, "t") == []


def test_worker_shutdown_during_a_step_hands_the_run_back_unrecorded(db_path: str, run) -> None:  # type: ignore[no-untyped-def]
    entered.clear()
    app = temp_app(db_path)

    @app.workflow()
    async def wf(ctx: Context) -> str:
        return await slow()

    async def main() -> str:
        async with app:
            await app.start(wf, run_id="sd")
            while "slow" not in entered:
                await asyncio.sleep(0.01)
        async with temp_app(db_path, worker=False) as client:
            return await client.handle("sd").status()

    assert run(main()) == "pending"  # released for another worker, not failed
    assert _journal(db_path, "sd") == []


def test_workflow_cancelled_raised_in_a_step_still_cancels_the_run(db_path: str, run) -> None:  # type: ignore[no-untyped-def]
    app = temp_app(db_path)

    @app.workflow()
    async def wf(ctx: Context) -> str:
        return await cancels_the_run()

    with pytest.raises(WorkflowCancelled):
        run(_outcome(app, wf, "wc"))


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "5"])
def test_max_takeovers_without_progress_is_validated(db_path: str, bad: object) -> None:
    with pytest.raises(InvalidArgument, match="max_takeovers_without_progress"):
        App(db_path, max_takeovers_without_progress=bad)  # type: ignore[arg-type]
    assert App(db_path, max_takeovers_without_progress=None).max_takeovers_without_progress is None
    assert App(db_path).max_takeovers_without_progress == 5


def _orphan(db_path: str, run_id: str, workflow: str, stalled: int) -> None:
    """A running run whose owner process is gone, already taken over ``stalled`` times in a
    row without progress (as if that many workers had died executing it)."""

    async def create() -> None:
        ghost = SQLiteStore(db_path)
        await ghost.open("ghost")
        now = time.time()
        no_arguments = App(db_path).codec.encode([[], {}])
        await ghost.create_run(
            NewRun(run_id, workflow, no_arguments), owner="ghost", lease_expires=now + 60, now=now
        )
        await ghost.close()  # the owner dies: its lock is free

    asyncio.run(create())
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE runs SET stalled_takeovers = ? WHERE run_id = ?", (stalled, run_id))
    conn.commit()
    conn.close()


@pytest.mark.parametrize(("limit", "quarantined"), [(3, True), (4, False), (None, False)])
def test_a_takeover_past_the_limit_quarantines_instead_of_executing(
    db_path: str,
    run,
    limit: int | None,
    quarantined: bool,  # type: ignore[no-untyped-def]
) -> None:
    entered.clear()
    app = temp_app(db_path, max_takeovers_without_progress=limit)

    @app.workflow(name="victim")
    async def victim(ctx: Context) -> str:
        entered.append("victim")
        return "done"

    async def main() -> object:
        async with app:
            return await app.handle("q").result(timeout=10)

    _orphan(db_path, "q", "victim", stalled=3)  # this takeover makes it 4
    if not quarantined:
        assert run(main()) == "done"
        return
    with pytest.raises(RunQuarantined, match="taken over 4 times in a row") as info:
        run(main())
    assert (info.value.run_id, info.value.takeovers, info.value.position) == ("q", 4, 0)
    assert "undying resume q" in str(info.value)
    assert entered == []  # not executed once more
