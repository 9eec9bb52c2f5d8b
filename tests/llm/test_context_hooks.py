"""The two small core hooks undying.llm is built on, tested on their own: a public way for a
library to find the running workflow, and a retry delay chosen by the failure itself."""

from __future__ import annotations

import itertools
import time
from typing import Any

import undying
from undying import App, Context


class SlowDown(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"retry after {seconds}")
        self.seconds = seconds


def test_current_context_and_in_workflow(app: App, run: Any) -> None:
    seen: dict[str, Any] = {}

    @undying.step
    async def inside_step() -> bool:
        return undying.in_workflow() or undying.current_context() is not None

    @app.workflow(name="hooks")
    async def hooks(ctx: Context) -> None:
        seen["ctx"] = undying.current_context() is ctx
        seen["in"] = undying.in_workflow()
        seen["step"] = await inside_step()

    async def main() -> None:
        async with app:
            await (await app.start(hooks)).result(timeout=10)

    run(main())
    assert seen == {"ctx": True, "in": True, "step": False}
    assert undying.current_context() is None and not undying.in_workflow()
    assert {"current_context", "in_workflow"} <= set(undying.__all__)


def test_retry_delay_from_replaces_the_backoff(app: App, run: Any) -> None:
    """A failure that says how long to wait is retried after that long, not after the
    backoff (here 30 s, so the test would time out if the hook were ignored)."""
    attempts: list[float] = []

    def asked(exc: BaseException) -> float | None:
        return exc.seconds if isinstance(exc, SlowDown) else None

    @undying.step(retries=2, retry_delay=30.0, retry_delay_from=asked)
    async def flaky() -> int:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise SlowDown(0.05)
        return len(attempts)

    @app.workflow(name="flaky")
    async def wf(ctx: Context) -> int:
        return await flaky()

    async def main() -> int:
        async with app:
            return int(await (await app.start(wf)).result(timeout=20))

    assert run(main()) == 3
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert all(0.04 <= g < 5 for g in gaps), gaps
