"""A run whose steps return values nested 200 levels deep: ``python deep_agent.py DB``.

The first process journals both results and SIGKILLs itself (a marker file next to DB remembers
that it did); the next one recovers the run, replays the two results from the journal and prints
``result <json>``. Decoding those results used to overflow the C stack of every process that
replayed them (SIGSEGV).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import undying
from undying import App, Context

DB = sys.argv[1]
app = App(DB, lease_ttl=2.0)


@dataclasses.dataclass
class Turn:
    text: str
    prev: Turn | None = None


@undying.step
async def history() -> Turn:
    turn = Turn("turn 0")
    for i in range(1, 200):
        turn = Turn(f"turn {i}", turn)
    return turn


@undying.step
async def nested() -> tuple[Any, ...]:
    value: tuple[Any, ...] = ("leaf",)
    for _ in range(199):
        value = (value,)
    return value


@app.workflow()
async def deep(ctx: Context) -> dict[str, int]:
    turn: Turn | None = await history()
    value: Any = await nested()
    marker = Path(f"{DB}.crashed")
    if not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)  # both results are journaled: die before the end
    turns = 0
    while turn is not None:
        turns, turn = turns + 1, turn.prev
    levels = 0
    while isinstance(value, tuple):
        levels, value = levels + 1, value[0]
    return {"turns": turns, "tuple levels": levels}


async def main() -> None:
    async with app:
        handle = await app.start(deep, run_id="deep-1")
        result = await handle.result(timeout=60)
    print("result " + json.dumps(result, sort_keys=True), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
