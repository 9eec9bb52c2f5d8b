"""BaseExceptions out of steps and workflows, and the quarantine, inside one process.

The real-process versions (SystemExit, a library's CancelledError) are in
tests/acceptance/test_poison_runs.py; these pin down what must still propagate (the run's own
cancellation, a timeout around a call).
"""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

import undying
from undying import App, Context, StepFailed, WorkflowCancelled
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
