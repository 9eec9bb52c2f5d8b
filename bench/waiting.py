"""Figures for agents that wait (issue: durable sleep, approval, children).

1. Worker RSS with 0 and with N runs waiting on events or long sleeps: released runs hold no
   coroutine, so the worker's memory should barely move.
2. Latency from ``send_event`` to the step after the wait: in the same process (the run
   waits in memory, or is released and replayed), and across processes (a second process
   sends; the worker notices through SQLite's data_version).

Usage: python bench/waiting.py [--runs 2000] [--samples 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta

import undying
from undying import App, Context

ARRIVALS: dict[str, float] = {}


@undying.step
async def mark(run_id: str) -> None:
    ARRIVALS[run_id] = time.perf_counter()


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_app(path: str, suspend_after: float) -> App:
    app = App(path, suspend_after=suspend_after, poll_interval=0.5)

    @app.workflow(name="approval")
    async def approval(ctx: Context) -> None:
        await ctx.wait_for_event("approve", timeout=timedelta(days=2))
        await mark(ctx.run_id)

    @app.workflow(name="nap")
    async def nap(ctx: Context) -> None:
        await ctx.sleep(timedelta(hours=1))

    return app


async def waiting_rss(path: str, runs: int) -> tuple[float, float, int]:
    app = make_app(path, suspend_after=0.0)
    async with app:
        before = rss_mib()
        for i in range(runs):
            await app.start("approval" if i % 2 else "nap", run_id=f"w{i}")
        worker = app._worker
        while worker.contexts or worker.tasks:
            await asyncio.sleep(0.01)
        waiting = len(await app.list_runs(status="waiting", limit=runs + 1))
        return before, rss_mib(), waiting


async def same_process_latency(path: str, samples: int, suspend_after: float) -> list[float]:
    app = make_app(path, suspend_after=suspend_after)
    out: list[float] = []
    async with app:
        for i in range(samples):
            run_id = f"lat{i}"
            handle = await app.start("approval", run_id=run_id)
            if suspend_after == 0:
                while await handle.status() != "waiting":
                    await asyncio.sleep(0.001)
            else:
                await asyncio.sleep(0.002)
            sent = time.perf_counter()
            await app.send_event(run_id, "approve", True)
            await handle.result()
            out.append((ARRIVALS[run_id] - sent) * 1000)
    return out


SENDER = """
import asyncio, sys, time
from undying import App
async def main():
    app = App(sys.argv[1], worker=False)
    async with app:
        for line in sys.stdin:
            run_id = line.strip()
            t = time.time()
            await app.send_event(run_id, "approve", True)
            print(t, flush=True)
asyncio.run(main())
"""


async def cross_process_latency(path: str, samples: int) -> list[float]:
    app = make_app(path, suspend_after=1.0)
    out: list[float] = []
    sender = subprocess.Popen(
        [sys.executable, "-c", SENDER, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sender.stdin is not None and sender.stdout is not None
    try:
        async with app:
            for i in range(samples):
                run_id = f"x{i}"
                handle = await app.start("approval", run_id=run_id)
                await asyncio.sleep(0.005)
                sender.stdin.write(run_id + "\n")
                sender.stdin.flush()
                sent_wall = float(await asyncio.to_thread(sender.stdout.readline))
                await handle.result()
                arrived_wall = time.time() - (time.perf_counter() - ARRIVALS[run_id])
                out.append((arrived_wall - sent_wall) * 1000)
    finally:
        sender.stdin.close()
        sender.wait(10)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="undying-bench-")
    before, after, waiting = asyncio.run(waiting_rss(os.path.join(tmp, "rss.db"), args.runs))
    print(
        f"worker RSS: {before:.1f} MiB with 0 waiting runs, {after:.1f} MiB with {waiting} "
        f"waiting runs (+{after - before:.1f} MiB), coroutines held: 0"
    )
    for label, suspend in (("in memory", 5.0), ("released and replayed", 0.0)):
        lat = asyncio.run(
            same_process_latency(os.path.join(tmp, f"l{suspend}.db"), args.samples, suspend)
        )
        print(
            f"send_event -> next step, same process, {label}: p50 {statistics.median(lat):.2f} ms, "
            f"p90 {pct(lat, 0.9):.2f} ms"
        )
    lat = asyncio.run(cross_process_latency(os.path.join(tmp, "x.db"), args.samples))
    print(
        f"send_event -> next step, across processes: p50 {statistics.median(lat):.2f} ms, "
        f"p90 {pct(lat, 0.9):.2f} ms"
    )


if __name__ == "__main__":
    main()
