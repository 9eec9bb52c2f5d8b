"""Workflows per second: many short runs in one process.

* sequential: ``async with app:``, then N times ``handle = await app.start(wf, i)`` followed by
  ``await handle.result()``, one run after another. Each run is one async step.
* concurrent: N runs started one after another, then all awaited with ``asyncio.gather``.

Baseline (same run, same kind of file): the three durable writes a one-step run cannot avoid,
done with Python's sqlite3 in autocommit mode on undying's schema (all migrations): INSERT
the run row, INSERT its one journal entry, UPDATE the run to completed. Its rate is the
ceiling for a sequential run that commits each of those writes on its own.

Each figure is the median of several repetitions, each on a fresh database file; the
baseline ratio is the median of per-repetition ratios (each undying repetition against the
baseline repetition measured just before it).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import sys
import time
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as common

import undying
from undying import App
from undying.codec import Codec

TARGET_SEQUENTIAL = 5_000.0


@undying.step(name="bench.one")
async def one(i: int) -> int:
    return i + 1


async def one_step_workflow(ctx: undying.Context, i: int) -> int:
    return await one(i)


async def _sequential(path: str, n: int, durability: str) -> float:
    app = App(path, durability=durability)
    wf = app.workflow(name="bench.throughput")(one_step_workflow)
    async with app:
        # one unmeasured run: first-use costs (statement cache, codec pools) are not in it
        await (await app.start(wf, -1)).result()
        gc.collect()
        start = time.perf_counter()
        for i in range(n):
            handle = await app.start(wf, i)
            await handle.result()
        elapsed = time.perf_counter() - start
    return elapsed


async def _concurrent(path: str, n: int, durability: str) -> float:
    app = App(path, durability=durability)
    wf = app.workflow(name="bench.throughput")(one_step_workflow)
    async with app:
        await (await app.start(wf, -1)).result()
        gc.collect()
        start = time.perf_counter()
        handles = [await app.start(wf, i) for i in range(n)]
        results = await asyncio.gather(*(h.result() for h in handles))
        elapsed = time.perf_counter() - start
    if results != [i + 1 for i in range(n)]:
        raise RuntimeError("wrong results")
    return elapsed


def _baseline(path: str, n: int, synchronous: str) -> float:
    """Three autocommit statements per run, on undying's own schema."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.executescript(common.undying_schema())
    codec = Codec()
    arg = codec.encode(((1,), {}))
    out = codec.encode(2)
    execute = db.execute
    clock = time.time
    gc.collect()
    start = time.perf_counter()
    for i in range(n):
        run_id = os.urandom(16).hex()
        now = clock()
        execute(
            "INSERT INTO runs (run_id, workflow, status, input, owner, lease_expires, epoch, "
            "created_at, updated_at) VALUES (?, 'bench.throughput', 'running', ?, 'w', ?, 1, "
            "?, ?)",
            (run_id, arg, now + 30, now, now),
        )
        execute(
            "INSERT INTO journal VALUES (?, 0, 'step', 'bench.one', ?, 'ok', 1, ?, ?, ?)",
            (run_id, b"0123456789abcdef", clock(), clock(), out),
        )
        execute(
            "UPDATE runs SET status = 'completed', output = ?, owner = NULL, "
            "lease_expires = NULL, updated_at = ? WHERE run_id = ? AND epoch = 1",
            (out, clock(), run_id),
        )
        del i
    elapsed = time.perf_counter() - start
    db.close()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("-n", "--workflows", type=int, default=None, help="runs per repetition")
    p.add_argument("--durability", choices=["normal", "full"], default="normal")
    p.add_argument(
        "--concurrent-n",
        type=int,
        default=None,
        help="runs per concurrent repetition (default: same as -n)",
    )
    args = p.parse_args(argv)
    n = args.workflows or (500 if args.quick else 2000)
    cn = args.concurrent_n or n
    reps = args.reps or (3 if args.quick else 5)
    sync = {"normal": "NORMAL", "full": "FULL"}[args.durability]

    print(
        f"throughput: {n} one-step workflows per repetition, median of {reps}, "
        f"durability={args.durability}"
    )
    print(common.env_line())
    base: list[float] = []
    seq: list[float] = []
    conc: list[float] = []
    with common.temp_dir(args.tmp) as root:
        files = common.FreshFiles(root)
        for rep in range(reps):
            base.append(n / _baseline(files.path("baseline"), n, sync))
            seq.append(n / asyncio.run(_sequential(files.path("seq"), n, args.durability)))
            conc.append(cn / asyncio.run(_concurrent(files.path("conc"), cn, args.durability)))
            print(
                f"  .. rep {rep + 1}: baseline {base[-1]:,.0f}/s  sequential {seq[-1]:,.0f}/s  "
                f"concurrent {conc[-1]:,.0f}/s",
                flush=True,
            )
    b, s, c = common.median(base), common.median(seq), common.median(conc)
    # paired ratios: each undying repetition against the baseline measured right before it
    s_ratio = common.median([x / y for x, y in zip(seq, base, strict=True)])
    c_ratio = common.median([x / y for x, y in zip(conc, base, strict=True)])
    rows: list[list[Any]] = [
        [
            "baseline: 3 autocommit writes per run (sqlite3)",
            n,
            b,
            1e6 / b,
            1.0,
            common.spread(base),
        ],
        ["undying sequential (start + await result)", n, s, 1e6 / s, s_ratio, common.spread(seq)],
        ["undying concurrent (start all, gather)", cn, c, 1e6 / c, c_ratio, common.spread(conc)],
    ]
    print()
    print(
        common.table(
            "Workflows per second (medians)",
            ["mode", "runs", "wf/s", "us/wf", "x baseline", "wf/s min..max"],
            rows,
        )
    )
    print()
    print(f"target: sequential >= {TARGET_SEQUENTIAL:,.0f} wf/s")
    figures = common.Figures("throughput")
    meta = {"backend": "sqlite", "durability": args.durability, "n": n}
    base_id = f"throughput.sqlite.{args.durability}"
    figures.add(
        f"{base_id}.baseline",
        "baseline: 3 autocommit writes per run (sqlite3)",
        "wf/s",
        base,
        better="higher",
        **meta,
    )
    figures.add(
        f"{base_id}.sequential",
        "undying sequential 1-step workflows",
        "wf/s",
        seq,
        better="higher",
        target=TARGET_SEQUENTIAL,
        **meta,
    )
    figures.add(
        f"{base_id}.sequential.ratio",
        "sequential / baseline (paired)",
        "x",
        common.paired_ratios(seq, base),
        better="higher",
        **meta,
    )
    figures.add(
        f"{base_id}.concurrent",
        "undying concurrent 1-step workflows",
        "wf/s",
        conc,
        better="higher",
        **{**meta, "n": cn},
    )
    figures.write(args.json)
    common.emit_summary(
        [
            common.summary_line(
                "throughput, sequential 1-step workflows",
                f"{s:,.0f} wf/s ({s_ratio:.2f}x of a {b:,.0f}/s 3-write baseline)",
                f">= {TARGET_SEQUENTIAL:,.0f}/s",
                s >= TARGET_SEQUENTIAL,
            ),
            common.summary_line(
                f"throughput, {cn} concurrent 1-step workflows",
                f"{c:,.0f} wf/s",
                "(info)",
                None,
            ),
        ]
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
