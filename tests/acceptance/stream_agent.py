"""The two processes of the stream crash tests: a writer that kills itself, a reader that
follows its stream from another process.

    python stream_agent.py write DB MARKERS COUNT KILLS
    python stream_agent.py read DB OFFSET OUT

``write`` starts (or, when it exists, recovers) run ``streamer-1``: for i in 0..COUNT-1 a step
computes i*i, then the workflow publishes ``{"i": i, "square": i*i}`` to stream ``numbers``.
``KILLS`` is ``none`` or a comma-separated list of ``step:<i>`` (inside the step, before it
returns: its result is not journaled) and ``publish:<i>`` (in workflow code right after
publish i returned: it is journaled); each fires once (a marker file in ``MARKERS``), by
SIGKILL of this very process. It prints ``result <json>`` when the run ends.

``read`` follows ``numbers`` of ``streamer-1`` from ``OFFSET`` (waiting for the run to be
created) and appends each value to ``OUT`` as a JSON line, flushed, until the stream ends.
``DB`` is a SQLite path or a PostgreSQL URL.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import undying
from undying import App, Context

RUN_ID = "streamer-1"
STREAM = "numbers"


def writer_app(db: str, markers: Path, kills: set[str]) -> App:
    app = App(db, strict=True)

    def crash_point(point: str) -> None:
        marker = markers / point.replace(":", "-")
        if point not in kills or marker.exists():
            return
        marker.write_text(str(os.getpid()))
        print(f"crashing at {point}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    @undying.step
    async def square(i: int) -> int:
        crash_point(f"step:{i}")
        return i * i

    @app.workflow(name="streamer")
    async def streamer(ctx: Context, count: int) -> int:
        for i in range(count):
            value = await square(i)
            await ctx.publish(STREAM, {"i": i, "square": value})
            crash_point(f"publish:{i}")
        return count

    return app


async def write(db: str, markers: str, count: int, kills: str) -> None:
    app = writer_app(db, Path(markers), set() if kills == "none" else set(kills.split(",")))
    async with app:
        handle = await app.start("streamer", count, run_id=RUN_ID)
        result = await handle.result(timeout=120)
    print("result " + json.dumps(result), flush=True)


async def read(db: str, offset: int, out: str) -> None:
    deadline = time.monotonic() + 120
    async with App(db, worker=False) as app:
        with open(out, "a") as sink:
            while True:
                try:
                    async for value in app.read_stream(RUN_ID, STREAM, offset=offset):
                        sink.write(json.dumps(value) + "\n")
                        sink.flush()
                        offset += 1
                    break
                except undying.RunNotFound:  # the writer has not started the run yet
                    if time.monotonic() > deadline:
                        raise
                    await app.wait_for_change(0.2)
    print(f"read to offset {offset}", flush=True)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "write":
        asyncio.run(write(args[0], args[1], int(args[2]), args[3]))
    else:
        asyncio.run(read(args[0], int(args[1]), args[2]))
