"""Storage growth of an agent whose context grows every turn (issue: context without bloat).

Each turn appends a ~1 KB message to the history; in one workload every step returns the
whole history (what agent frameworks checkpoint), in the other only the new message. Prints
database bytes at N turns (after a checkpoint and VACUUM, so the figure is what the data
needs, not free pages), the bytes of an empty database with the same schema, the growth
exponent log(size_N2/size_N1)/log(N2/N1), and the wall time per step of the run.

Three message shapes (bench/_shapes.py): ``text`` (prose-like words), ``hex`` (16 sha256
hex digests joined, high-entropy text) and ``json`` (a tool result as a JSON document).

The baseline for each is ``zstd``: the distinct data (each message once, msgpack-encoded, one
after the other) compressed as one zstd level-3 stream; ``ratio`` is the database bytes over
the empty database's, divided by that. It is a floor no per-row store reaches exactly (every
journal row has its own key, times and digest; a zstd stream over all messages finds repeats
across them), so the "new message" workload, which stores each message once in its own row,
is printed alongside as the practical floor. The per-step time at the largest N over that at
the smallest is ``time ratio`` (1.0: a step costs the same whatever the history's length).

Usage: python bench/storage_growth.py [--turns 100,1000] [--shapes text,hex,json] [--reps 3]
"""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
import sys
import time
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as common
import _shapes
import msgpack

import undying
from undying import App, Context
from undying.codec import zstd_compress


def message(turn: int) -> dict[str, object]:
    """The ``text`` shape (kept under this name for scripts that imported it)."""
    return _shapes.text_message(turn)


@undying.step
async def grow(history: list[dict[str, object]], shape: str, turn: int) -> list[dict[str, object]]:
    return [*history, _shapes.message(shape, turn)]


@undying.step
async def say(shape: str, turn: int) -> dict[str, object]:
    return _shapes.message(shape, turn)


def zstd_distinct(shape: str, turns: int) -> int:
    """Bytes of the distinct data compressed as one zstd stream (the baseline)."""
    data = b"".join(msgpack.packb(_shapes.message(shape, t)) for t in range(turns))
    return len(zstd_compress(data))


def db_bytes(path: str) -> int:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("VACUUM")
    return os.path.getsize(path)


async def run(path: str, turns: int, whole: bool, shape: str = "text") -> tuple[int, float]:
    """(database bytes, seconds from start to result) of one agent run of ``turns`` turns.

    The CPU seconds of the same span go to ``run.cpu`` (steadier than wall time on a machine
    others load)."""
    app = App(path)

    @app.workflow(name="agent")
    async def agent(ctx: Context) -> int:
        history: list[dict[str, object]] = []
        for turn in range(turns):
            if whole:
                history = await grow(history, shape, turn)
            else:
                history.append(await say(shape, turn))
        return len(history)

    async with app:
        if turns:
            start, cpu = time.perf_counter(), time.process_time()
            assert await (await app.start(agent)).result() == turns
            elapsed = time.perf_counter() - start
            _cpu.append(time.process_time() - cpu)
        else:
            elapsed = 0.0
    return db_bytes(path), elapsed


_cpu: list[float] = []


def measure(
    files: common.FreshFiles, shape: str, whole: bool, turns: int, reps: int
) -> dict[str, Any]:
    sizes, times, cpu = [], [], []
    for _ in range(reps):
        size, elapsed = asyncio.run(
            run(files.path(f"{shape}-{whole}-{turns}"), turns, whole, shape)
        )
        sizes.append(size)
        times.append(elapsed / turns * 1e3)
        cpu.append(_cpu[-1] / turns * 1e3)
    return {"bytes": sizes, "ms_per_step": times, "cpu_ms_per_step": cpu}


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--turns", default=None, help="comma list of N (default 100,1000)")
    p.add_argument("--shapes", default="text,hex,json", help="comma list of: text, hex, json")
    args = p.parse_args(argv)
    turns = common.sizes(args.turns or ("20,100" if args.quick else "100,1000"))
    shapes = [s for s in args.shapes.split(",") if s]
    reps = args.reps or (1 if args.quick else 3)
    figures = common.Figures("storage_growth")
    print(f"storage growth: N = {turns} turns, shapes {shapes}, median of {reps}")
    print(common.env_line())
    rows: list[list[Any]] = []
    summary = []
    with common.temp_dir(args.tmp) as root:
        files = common.FreshFiles(root)
        empty, _ = asyncio.run(run(files.path("empty"), 0, True))
        figures.add(
            "storage.empty_db", "empty undying database", "bytes", [empty], backend="sqlite"
        )
        for shape in shapes:
            for whole, label in ((True, "whole history"), (False, "new message")):
                medians: list[float] = []
                times: list[float] = []
                cpus: list[float] = []
                for n in turns:
                    r = measure(files, shape, whole, n, reps)
                    key = "whole" if whole else "message"
                    size = figures.add(
                        f"storage.{shape}.{key}.n{n}",
                        f"database bytes, {shape} messages, each step returns the {label}",
                        "bytes",
                        r["bytes"],
                        backend="sqlite",
                        shape=shape,
                        returns=key,
                        n=n,
                        distinct_bytes=_shapes.distinct_bytes(shape, n),
                        empty_bytes=empty,
                    )
                    ms = figures.add(
                        f"storage.{shape}.{key}.n{n}.time",
                        f"ms per step, {shape} messages, each step returns the {label}",
                        "ms/step",
                        r["ms_per_step"],
                        backend="sqlite",
                        shape=shape,
                        returns=key,
                        n=n,
                    )
                    cpu = figures.add(
                        f"storage.{shape}.{key}.n{n}.cpu",
                        f"CPU ms per step, {shape} messages, each step returns the {label}",
                        "ms/step",
                        r["cpu_ms_per_step"],
                        backend="sqlite",
                        shape=shape,
                        returns=key,
                        n=n,
                    )
                    medians.append(size["median"])
                    times.append(ms["median"])
                    cpus.append(cpu["median"])
                    baseline = zstd_distinct(shape, n)
                    ratio = (size["median"] - empty) / baseline
                    figures.add(
                        f"storage.{shape}.{key}.n{n}.ratio",
                        f"database bytes over empty / zstd of the distinct data, {shape}, {label}",
                        "ratio",
                        [ratio],
                        backend="sqlite",
                        shape=shape,
                        returns=key,
                        n=n,
                        zstd_distinct_bytes=baseline,
                    )
                    rows.append(
                        [
                            shape,
                            label,
                            n,
                            size["median"] / 2**20,
                            (size["median"] - empty) / 2**20,
                            _shapes.distinct_bytes(shape, n) / 2**20,
                            baseline / 2**20,
                            ratio,
                            ms["median"],
                            common.spread(r["ms_per_step"]),
                            cpu["median"],
                        ]
                    )
                    print(
                        f"  .. {shape}, {label}, N={n}: {size['median'] / 2**20:.2f} MiB, "
                        f"{ms['median']:.2f} ms/step",
                        flush=True,
                    )
                if len(turns) >= 2 and medians[0] > 0:
                    exponent = math.log(medians[-1] / medians[0]) / math.log(turns[-1] / turns[0])
                    figures.add(
                        f"storage.{shape}.{'whole' if whole else 'message'}.exponent",
                        f"growth exponent, {shape}, {label}, N={turns[0]}..{turns[-1]}",
                        "exponent",
                        [exponent],
                        backend="sqlite",
                        shape=shape,
                    )
                    over = math.log((medians[-1] - empty) / (medians[0] - empty)) / math.log(
                        turns[-1] / turns[0]
                    )
                    figures.add(
                        f"storage.{shape}.{'whole' if whole else 'message'}.exponent_over_empty",
                        f"growth exponent of the bytes over the empty database's, {shape}, {label}",
                        "exponent",
                        [over],
                        backend="sqlite",
                        shape=shape,
                    )
                    slowdown = times[-1] / times[0]
                    figures.add(
                        f"storage.{shape}.{'whole' if whole else 'message'}.time_ratio",
                        f"ms per step at N={turns[-1]} over N={turns[0]}, {shape}, {label}",
                        "ratio",
                        [slowdown],
                        backend="sqlite",
                        shape=shape,
                    )
                    if whole:
                        summary.append(
                            common.summary_line(
                                f"storage, growing history ({shape}), N={turns[-1]}",
                                f"{medians[-1] / 2**20:.2f} MiB ({ratio:.2f}x zstd of the "
                                f"distinct data), growth exponent {exponent:.2f} "
                                f"({over:.2f} over the empty database), "
                                f"{times[0]:.2f} -> {times[-1]:.2f} ms/step "
                                f"({slowdown:.2f}x; CPU {cpus[0]:.2f} -> {cpus[-1]:.2f}, "
                                f"{cpus[-1] / cpus[0]:.2f}x)",
                                "(info)",
                                None,
                            )
                        )
    print()
    print(
        common.table(
            f"Database bytes after N turns (MiB; empty database {empty / 2**20:.3f} MiB)",
            [
                "shape",
                "each step returns",
                "N",
                "MiB",
                "MiB over empty",
                "distinct MiB",
                "zstd MiB",
                "ratio",
                "ms/step",
                "ms/step min..max",
                "CPU ms/step",
            ],
            rows,
        )
    )
    figures.write(args.json)
    common.emit_summary(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
