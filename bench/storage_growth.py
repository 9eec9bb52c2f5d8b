"""Storage growth of an agent whose context grows every turn (issue: context without bloat).

Each turn appends a ~1 KB message to the history; in one workload every step returns the
whole history (what agent frameworks checkpoint), in the other only the new message. Prints
database bytes at N turns (after a checkpoint and VACUUM, so the figure is what the data
needs, not free pages) and the growth exponent log(size_N2/size_N1)/log(N2/N1).

Usage: python bench/storage_growth.py [--turns 100 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sqlite3
import tempfile

import undying
from undying import App, Context


def message(turn: int) -> dict[str, object]:
    # ~1 KB of prose-like text, different every turn.
    words = " ".join(f"token{(turn * 131 + i * 7) % 5003}" for i in range(110))
    return {"role": "assistant" if turn % 2 else "user", "turn": turn, "content": words}


@undying.step
async def grow(history: list[dict[str, object]], turn: int) -> list[dict[str, object]]:
    return [*history, message(turn)]


@undying.step
async def say(turn: int) -> dict[str, object]:
    return message(turn)


def db_bytes(path: str) -> int:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("VACUUM")
    return os.path.getsize(path)


async def run(path: str, turns: int, whole: bool) -> int:
    app = App(path)

    @app.workflow(name="agent")
    async def agent(ctx: Context) -> int:
        history: list[dict[str, object]] = []
        for turn in range(turns):
            if whole:
                history = await grow(history, turn)
            else:
                history.append(await say(turn))
        return len(history)

    async with app:
        assert await (await app.start(agent)).result() == turns
    return db_bytes(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, nargs=2, default=[100, 1000])
    args = parser.parse_args()
    small, large = args.turns
    tmp = tempfile.mkdtemp(prefix="undying-growth-")
    real = sum(len(repr(message(t))) for t in range(large))
    print(f"real data at N={large}: {real / 2**20:.2f} MiB of messages")
    for whole, label in (
        (True, "each step returns the whole history"),
        (False, "each step returns the new message"),
    ):
        sizes = [
            asyncio.run(run(os.path.join(tmp, f"{whole}-{n}.db"), n, whole)) for n in (small, large)
        ]
        exponent = math.log(sizes[1] / sizes[0]) / math.log(large / small)
        print(
            f"{label}: N={small}: {sizes[0] / 2**20:.2f} MiB, "
            f"N={large}: {sizes[1] / 2**20:.2f} MiB, growth exponent {exponent:.2f}"
        )


if __name__ == "__main__":
    main()
