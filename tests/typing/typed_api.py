"""The public API's types, checked by mypy (``make test`` runs ``mypy tests/typing``).

Nothing here runs. ``assert_type`` lines fail the check if an annotation loses its precision;
each ``# type: ignore[code]`` marks a call that must be refused, and strict mode's
``warn_unused_ignores`` fails the check if mypy stops refusing it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, assert_type

import undying
from undying import App, ChildHandle, Context, RunHandle

app = App("memory://typing")


@undying.step(retries=2)
async def fetch(url: str) -> bytes:
    return url.encode()


def parse(data: bytes, *, strict: bool = False) -> dict[str, int]:
    return {"size": len(data)}


@app.workflow()
async def child(ctx: Context, n: int) -> int:
    return n


@app.workflow()
async def agent(ctx: Context, task: str) -> list[str]:
    page = await ctx.step(fetch, task)
    assert_type(page, bytes)
    parsed = await ctx.step(parse, page, strict=True)
    assert_type(parsed, dict[str, int])
    assert_type(await fetch("https://example.com"), bytes)
    doubled = await ctx.call(child, 3)
    assert_type(doubled, int)
    handle = await ctx.start_child(child, 4)
    assert_type(handle, ChildHandle[int])
    assert_type(await handle.result(), int)
    assert_type(ctx.now().year, int)
    assert_type(ctx.random(), float)
    await ctx.sleep(1.5)
    return [task, str(doubled)]


@app.schedule("*/5 * * * *", timezone="Europe/Paris", missed="catch_up", max_catch_up=3)
async def digest(ctx: Context, tick: dt.datetime) -> str:
    return tick.isoformat()


assert_type(app.schedule(every=dt.timedelta(hours=1), name="hourly", workflow=digest), str)


async def client() -> None:
    assert_type(await app.pause_schedule("hourly"), bool)
    await app.start(agent, "x", queue="llm", concurrency_key="ann")
    await app.start(agent, "x", dedup_key="evt_1", dedup_window=dt.timedelta(hours=1))
    handle = await app.start(agent, "book a flight", run_id="trip-42")
    assert_type(handle, RunHandle[list[str]])
    assert_type(await handle.result(), list[str])
    by_name = await app.start("agent", "x")
    assert_type(by_name, RunHandle[Any])  # by name: the type is not known


async def refused(ctx: Context) -> None:
    await ctx.step(fetch, 42)  # type: ignore[call-overload]
    await ctx.step(parse, b"x", strictly=True)  # type: ignore[arg-type, call-arg]
    await ctx.call(child, "three")  # type: ignore[call-overload]
