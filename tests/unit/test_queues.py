"""Queues: global and per-worker concurrency, rate limits and priorities hold."""

from __future__ import annotations

import asyncio

import pytest

import undying
from undying import Context, InvalidArgument
from undying.testing import claim_now, temp_app

active = 0
peak = 0
order: list[str] = []


@undying.step
async def work(tag: str) -> None:
    global active, peak
    active += 1
    peak = max(peak, active)
    order.append(tag)
    await asyncio.sleep(0.02)
    active -= 1


def test_queue_concurrency_and_priority(db_path: str) -> None:
    global peak
    peak = 0
    order.clear()
    app = temp_app(db_path, poll_interval=0.05)
    llm = app.queue("llm", concurrency=2)

    @app.workflow()
    async def job(ctx: Context, tag: str) -> str:
        await work(tag)
        return tag

    async def main() -> list[object]:
        async with app:
            handles = [await app.start(job, f"t{i}", queue=llm) for i in range(8)]
            urgent = await app.start(job, "urgent", queue=llm, priority=10)
            return [await h.result(timeout=30) for h in [*handles, urgent]]

    results = asyncio.run(main())
    assert results == [*(f"t{i}" for i in range(8)), "urgent"]
    assert peak <= 2
    assert order.index("urgent") < order.index("t7")


def test_queue_rate_limit(db_path: str) -> None:
    app = temp_app(db_path, poll_interval=0.05)
    app.queue("slow", rate_limit=(3, 60.0))

    @app.workflow()
    async def job(ctx: Context) -> None:
        return None

    async def main() -> list[str]:
        async with app:
            handles = [await app.start(job, queue="slow") for _ in range(5)]
            await asyncio.gather(*(h.result(timeout=30) for h in handles[:3]))
            for _ in range(3):  # more claim rounds must not exceed the limit
                await claim_now(app)
            return [await h.status() for h in handles]

    statuses = asyncio.run(main())
    assert statuses.count("completed") == 3 and statuses.count("pending") == 2


def test_unknown_queue_is_rejected(db_path: str) -> None:
    app = temp_app(db_path)

    @app.workflow()
    async def job(ctx: Context) -> None:
        return None

    async def main() -> None:
        async with app:
            with pytest.raises(InvalidArgument, match=r"app\.queue"):
                await app.start(job, queue="nope")

    asyncio.run(main())
