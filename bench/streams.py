"""Durable streams: what a published value costs, and how soon a reader has it.

1. Publish cost per value (microseconds), N values per run, on a fresh SQLite file each
   repetition (and on PostgreSQL with ``--postgres``):
   * ``ctx.publish`` in workflow code, awaited one by one: each commits with its journal
     entry (one transaction of three writes: the stream's length, the item, the entry);
   * ``undying.publish`` inside one step, awaited one by one (no journal entry; one
     transaction of two writes);
   * the batched writer the LLM adapters use (``StepStream.add`` per value, one flush at the
     end): values queued while a write is in flight go in the next one;
   * baseline: a no-op ``@undying.step`` per value (one journal append), so the publish
     figures can be read against the cost of a step.
   The figure is the wall time of the loop inside the workflow divided by N.
2. Reader latency (milliseconds) from just before ``ctx.publish`` to the value coming out of
   ``app.read_stream``, with the writer pausing 20 ms between values so the reader is idle,
   waiting, each time: a reader in the writer's App (woken in-process), and a reader in
   another process (woken by SQLite's data_version, polled every 10 ms, or PostgreSQL's
   LISTEN). Timestamps are ``time.perf_counter()``, the system-wide monotonic clock, so the
   two processes compare them.

Every figure is the median of the repetitions (latency: of every value of every repetition).

Usage: python bench/streams.py [--quick] [--values N] [--samples N] [--postgres SERVER_URL]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as common

import undying
from undying import App, Context
from undying.streams import running_step_stream

PAUSE = 0.02  # between two values in the latency runs: the reader waits each time


@undying.step(name="bench.noop")
async def noop() -> None:
    return None


@undying.step(name="bench.publish_each")
async def publish_each(n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        await undying.publish("s", i)
    return time.perf_counter() - started


@undying.step(name="bench.publish_batched")
async def publish_batched(n: int) -> float:
    started = time.perf_counter()
    writer = running_step_stream("s")
    for i in range(n):
        writer.add(i)
    await writer.flush()
    return time.perf_counter() - started


def make_app(url: str, *, worker: bool = True) -> App:
    app = App(url, worker=worker)

    @app.workflow(name="wf_publish")
    async def wf_publish(ctx: Context, n: int) -> float:
        started = time.perf_counter()
        for i in range(n):
            await ctx.publish("s", i)
        return time.perf_counter() - started

    @app.workflow(name="step_each")
    async def step_each(ctx: Context, n: int) -> float:
        return await publish_each(n)

    @app.workflow(name="step_batched")
    async def step_batched(ctx: Context, n: int) -> float:
        return await publish_batched(n)

    @app.workflow(name="noop_steps")
    async def noop_steps(ctx: Context, n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            await noop()
        return time.perf_counter() - started

    @app.workflow(name="ticker")
    async def ticker(ctx: Context, n: int) -> None:
        for _ in range(n):
            await ctx.publish("lat", time.perf_counter())
            await ctx.sleep(PAUSE)

    return app


KINDS = [
    ("wf_publish", "ctx.publish in workflow code"),
    ("step_each", "undying.publish in a step, awaited each"),
    ("step_batched", "step, batched (the LLM adapters' path)"),
    ("noop_steps", "baseline: a no-op step per value"),
]


async def publish_cost(url: str, kind: str, n: int) -> float:
    app = make_app(url)
    async with app:
        handle = await app.start(kind, n, run_id=f"{kind}-{uuid.uuid4().hex[:8]}")
        seconds = await handle.result(timeout=600)
    return float(seconds) / n * 1e6


async def latency_here(url: str, n: int) -> list[float]:
    app = make_app(url)
    async with app:
        handle = await app.start("ticker", n, run_id=f"here-{uuid.uuid4().hex[:8]}")
        lags = [(time.perf_counter() - sent) * 1e3 async for sent in handle.read_stream("lat")]
        await handle.result(timeout=60)
    return lags


async def latency_elsewhere(url: str, n: int) -> list[float]:
    run_id = f"there-{uuid.uuid4().hex[:8]}"
    async with App(url, worker=False) as app:
        await app.store.get_run(run_id)  # the store is open (and migrated) before the writer
        writer = subprocess.Popen(
            [sys.executable, __file__, "--writer", url, run_id, str(n)],
            stdout=subprocess.DEVNULL,
        )
        lags: list[float] = []
        try:
            while not lags:
                try:
                    async for sent in app.read_stream(run_id, "lat"):
                        lags.append((time.perf_counter() - sent) * 1e3)
                except undying.RunNotFound:  # the writer has not created the run yet
                    await app.wait_for_change(0.05)
        finally:
            writer.wait(60)
    return lags[1:]  # the first value may have waited for this reader to find the run


async def write_ticks(url: str, run_id: str, n: int) -> None:
    app = make_app(url)
    async with app:
        await (await app.start("ticker", n, run_id=run_id)).result(timeout=120)


@contextlib.contextmanager
def postgres_database(server: str) -> Iterator[str]:
    """A database of its own on ``server``, dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = f"undying_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        from urllib.parse import urlsplit

        yield urlsplit(server)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            admin.execute(drop.format(sql.Identifier(name)))


def measure(
    label: str, url: Callable[[], str], args: Any, figures: common.Figures
) -> tuple[list[list[Any]], list[list[Any]]]:
    """The figures of one backend; ``url()`` is the database of the next run (SQLite: a
    fresh file each time)."""
    cost_rows: list[list[Any]] = []
    samples: dict[str, list[float]] = {kind: [] for kind, _ in KINDS}
    here: list[float] = []
    there: list[float] = []
    for _ in range(args.reps):
        for kind, _ in KINDS:  # interleaved, so drift hits every kind alike
            samples[kind].append(asyncio.run(publish_cost(url(), kind, args.values)))
        here += asyncio.run(latency_here(url(), args.samples))
        there += asyncio.run(latency_elsewhere(url(), args.samples))
    for kind, name in KINDS:
        figures.add(f"publish.{label}.{kind}", f"{name} ({label})", "us/value", samples[kind])
        cost_rows.append([name, common.median(samples[kind]), common.spread(samples[kind])])
    latency_rows = []
    for where, lags in (("same process", here), ("another process", there)):
        key = where.replace(" ", "_")
        figures.add(f"latency.{label}.{key}", f"reader latency, {where} ({label})", "ms", lags)
        latency_rows.append([where, common.median(lags), common.spread(lags), len(lags)])
    return cost_rows, latency_rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--writer":
        url, run_id, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
        asyncio.run(write_ticks(url, run_id, n))
        return
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--values", type=int, default=None, help="values per run (2000; quick 300)")
    p.add_argument("--samples", type=int, default=None, help="latency values per run (50)")
    p.add_argument("--postgres", default=None, metavar="SERVER_URL", help="also on PostgreSQL")
    args = p.parse_args()
    args.values = args.values or (300 if args.quick else 2000)
    args.samples = args.samples or (20 if args.quick else 50)
    args.reps = args.reps or (3 if args.quick else 5)
    figures = common.Figures("streams")
    with common.temp_dir(args.tmp) as tmp:
        files = common.FreshFiles(tmp)
        results = [("sqlite", measure("sqlite", lambda: files.path("s"), args, figures))]
        if args.postgres:
            with postgres_database(args.postgres) as pg:
                results.append(("postgres", measure("postgres", lambda: pg, args, figures)))
    for label, (cost_rows, latency_rows) in results:
        title = f"Publish cost per value, {label} ({args.values} values per run, {args.reps} runs)"
        print(common.table(title, ["publishing", "us/value", "spread"], cost_rows))
        print()
        title = f"Reader latency, {label} (publish -> read_stream, {args.samples} values per run)"
        print(common.table(title, ["reader", "ms (median)", "spread", "values"], latency_rows))
        print()
    figures.write(args.json)


if __name__ == "__main__":
    main()
