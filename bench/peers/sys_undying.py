"""undying's side of the peer workloads: ``App(db, durability=...)``, async steps."""

from __future__ import annotations

import argparse
import asyncio
import time

import _shapes
import protocol

import undying
from undying import App, Context


@undying.step(name="peers.noop")
async def noop() -> None:
    return None


@undying.step(name="peers.one")
async def one(i: int) -> int:
    return i + 1


@undying.step(name="peers.grow")
async def grow(history: list[_shapes.Message], shape: str, turn: int) -> list[_shapes.Message]:
    return [*history, _shapes.message(shape, turn)]


@undying.step(name="peers.marker")
async def marker() -> None:
    await protocol.marker_async()


async def steps_wf(ctx: Context, n: int) -> int:
    for _ in range(n):
        await noop()
    return n


async def one_wf(ctx: Context, i: int) -> int:
    return await one(i)


async def agent_wf(ctx: Context, n: int, shape: str) -> int:
    history: list[_shapes.Message] = []
    for turn in range(n):
        history = await grow(history, shape, turn)
    return len(history)


async def crashy_wf(ctx: Context, steps: int, crash_at: int) -> int:
    for i in range(steps):
        if i == crash_at:
            await marker()
        else:
            await noop()
    return steps


def make_app(args: argparse.Namespace) -> App:
    pg = args.db.startswith("postgresql://")
    app = App(args.db) if pg else App(args.db, durability=args.durability)
    app.workflow(name="peers.steps")(steps_wf)
    app.workflow(name="peers.one")(one_wf)
    app.workflow(name="peers.agent")(agent_wf)
    app.workflow(name="peers.crashy")(crashy_wf)
    return app


async def _main(task: str, args: argparse.Namespace) -> None:
    protocol.opening()
    app = make_app(args)
    async with app:
        if task == "overhead":
            await (await app.start("peers.steps", 10)).result()
            start = time.perf_counter()
            await (await app.start("peers.steps", args.n)).result()
            protocol.result(seconds=protocol.timed(start))
        elif task == "throughput":
            await (await app.start("peers.one", -1)).result()
            start = time.perf_counter()
            for i in range(args.count):
                assert await (await app.start("peers.one", i)).result() == i + 1
            protocol.result(seconds=protocol.timed(start))
        elif task == "storage":
            start = time.perf_counter()
            if args.n:
                assert await (await app.start("peers.agent", args.n, args.shape)).result() == args.n
            protocol.result(seconds=protocol.timed(start))
        elif task == "prepare":
            handle = await app.start("peers.crashy", args.steps, args.crash_at, run_id=args.run_id)
            await handle.result()
        else:  # recover: the worker of `async with app` already took the dead worker's run over
            assert await app.handle(args.run_id).result() == args.steps
            protocol.result(seconds=protocol.since_opening())


def run(task: str, args: argparse.Namespace) -> None:
    asyncio.run(_main(task, args))
