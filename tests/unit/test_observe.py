"""The observer hooks: every execution and every step (executed or replayed) is reported."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

import undying
from undying import observe
from undying.store.base import RunRecord
from undying.testing import temp_app


class Recording:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def run_started(self, run: RunRecord, *, replaying: bool) -> object:
        self.events.append(("run", run.run_id, replaying))
        return run.run_id

    def run_finished(self, token: object, status: str, error: BaseException | None) -> None:
        self.events.append(("run end", token, status, type(error).__name__ if error else None))

    def step_started(
        self, run: RunRecord, seq: int, name: str, attempt: int, *, replayed: bool
    ) -> object:
        self.events.append(("step", seq, name.split(":")[-1], attempt, replayed))
        return seq

    def step_finished(self, token: object, error: BaseException | None) -> None:
        self.events.append(("step end", token, type(error).__name__ if error else None))

    def annotate(self, attributes: Mapping[str, Any]) -> None:
        self.events.append(("annotate", dict(attributes)))


@pytest.fixture
def recording() -> Iterator[Recording]:
    watcher = Recording()
    previous = observe.install(watcher)
    yield watcher
    observe.install(previous)


flaky_calls: list[int] = []


@undying.step(retries=1, retry_delay=0.0)
async def flaky() -> str:
    flaky_calls.append(1)
    undying.observe.annotate(model="m-1", input_tokens=3)
    if len(flaky_calls) == 1:
        raise ConnectionError("once")
    return "ok"


def test_executions_and_steps_are_reported_replayed_or_not(
    recording: Recording, db_path: str
) -> None:
    def make() -> undying.App:
        app = temp_app(db_path)

        @app.workflow(name="watched")
        async def watched(ctx: undying.Context) -> str:
            got = await flaky()
            await ctx.wait_for_event("go")
            return got

        return app

    async def first() -> None:
        async with make() as app:
            handle = await app.start("watched", run_id="w")
            await undying.testing.wait_for_status(handle, "waiting")

    async def second() -> str:
        async with make() as app:
            await app.send_event("w", "go")
            return str(await app.handle("w").result(timeout=10))

    asyncio.run(first())
    assert asyncio.run(second()) == "ok"
    assert len(flaky_calls) == 2  # the replay did not call it again
    events = recording.events
    assert events[:8] == [
        ("run", "w", False),
        ("step", 0, "flaky", 1, False),
        ("annotate", {"model": "m-1", "input_tokens": 3}),
        ("step end", 0, "ConnectionError"),
        ("step", 0, "flaky", 2, False),
        ("annotate", {"model": "m-1", "input_tokens": 3}),
        ("step end", 0, None),
        ("run end", "w", "suspended", None),
    ]
    assert events[8:] == [
        ("run", "w", True),
        ("step", 0, "flaky", 2, True),
        ("step end", 0, None),
        ("run end", "w", "completed", None),
    ]
