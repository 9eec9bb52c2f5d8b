"""Per-step cost of a journaled step, against the cost of the write it cannot avoid.

For each kind of step and each durability setting, one repetition does two things on fresh
database files in one temp dir:

* FLOOR: Python's sqlite3, same pragmas as undying (WAL; synchronous NORMAL or FULL), a table
  created from undying's own ``journal`` DDL (WITHOUT ROWID, PRIMARY KEY (run_id, seq)), and
  one INSERT per step in autocommit mode (the INSERT is the transaction: one COMMIT per step).
  Rows have the same values and byte sizes undying writes (digest, payload frame, timestamps).
* UNDYING: ``App(path, durability=...)``, ``async with app:``, start a workflow that awaits N
  steps one after another, await its result. The figure is the wall time of start -> result
  divided by N (it includes creating and finishing the run, a few statements amortised over
  N). ``in-loop`` is the time of the loop inside the workflow alone.

Floor and undying repetitions alternate, so each undying repetition has a floor measured
next to it; the ratio is the median of those paired ratios (undying_i / floor_i), which
cancels slow drift in the machine better than a ratio of medians. The us/step columns are
plain medians.

An extra informational floor, ``floor-fenced``, runs undying's exact ``append_entry`` statement
(INSERT ... SELECT FROM runs WHERE epoch = ? ... ON CONFLICT DO UPDATE) on undying's full
schema (every migration, so every index on ``journal``), so the difference
between SQL shape and Python overhead can be read off.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import sys
import time
from dataclasses import dataclass
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as common

import undying
from undying import App
from undying.codec import Codec, digest

TARGET_RATIO = 1.5


# -- the steps ---------------------------------------------------------------------------------
@undying.step(name="bench.noop")
async def noop() -> None:
    return None


@undying.step(name="bench.work")
async def work(i: int) -> dict[str, Any]:
    return {"i": i, "ok": True, "label": "done"}


@undying.step(name="bench.noop_sync")
def noop_sync() -> None:
    return None


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    step_name: str
    digest_len: int
    payload_len: int


def _variants() -> list[Variant]:
    codec = Codec()
    none_frame = codec.encode(None)
    dict_frame = codec.encode({"i": 500, "ok": True, "label": "done"})
    arg_digest = digest(codec.encode(((500,), {})))
    return [
        Variant("noop", "async no-op step", "bench.noop", 0, len(none_frame)),
        Variant(
            "work", "async step(i) -> small dict", "bench.work", len(arg_digest), len(dict_frame)
        ),
        Variant("sync", "sync no-op step (thread hop)", "bench.noop_sync", 0, len(none_frame)),
    ]


async def _workflow(ctx: undying.Context, kind: str, n: int) -> float:
    start = time.perf_counter()
    if kind == "noop":
        for _ in range(n):
            await noop()
    elif kind == "work":
        for i in range(n):
            await work(i)
    else:
        for _ in range(n):
            await noop_sync()
    return time.perf_counter() - start


# -- undying -----------------------------------------------------------------------------------
async def _undying_once(path: str, durability: str, kind: str, n: int) -> tuple[float, float]:
    app = App(path, durability=durability)
    wf = app.workflow(name="bench.step_overhead")(_workflow)
    async with app:
        gc.collect()
        start = time.perf_counter()
        handle = await app.start(wf, kind, n)
        in_loop = await handle.result()
        total = time.perf_counter() - start
    return total, float(in_loop)


# -- the floor ---------------------------------------------------------------------------------
def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    return db


def _journal_ddl() -> str:
    """The CREATE TABLE journal statement, copied from undying's schema file."""
    sql = common.JOURNAL_DDL_FILE.read_text()
    code = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
    for statement in code.split(";"):
        if statement.strip().startswith("CREATE TABLE journal"):
            return statement.strip()
    raise RuntimeError(f"no CREATE TABLE journal in {common.JOURNAL_DDL_FILE}")


def _floor_once(path: str, synchronous: str, v: Variant, n: int) -> float:
    db = _connect(path, synchronous)
    db.execute(_journal_ddl())
    run_id = os.urandom(16).hex()
    dig = os.urandom(v.digest_len)
    payload = os.urandom(v.payload_len)
    sql = "INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    execute = db.execute
    clock = time.time
    gc.collect()
    start = time.perf_counter()
    for seq in range(n):
        started = clock()
        execute(sql, (run_id, seq, "step", v.step_name, dig, "ok", 1, started, clock(), payload))
    elapsed = time.perf_counter() - start
    db.close()
    return elapsed


def _floor_fenced_once(path: str, synchronous: str, v: Variant, n: int) -> float:
    """undying's own append_entry statement, on undying's full schema (informational)."""
    from undying.store.sqlfiles import queries

    db = _connect(path, synchronous)
    db.executescript(common.undying_schema())
    run_id = os.urandom(16).hex()
    db.execute(
        "INSERT INTO runs (run_id, workflow, status, input, epoch, created_at, updated_at) "
        "VALUES (?, 'w', 'running', x'00', 1, 0, 0)",
        (run_id,),
    )
    sql = queries("sqlite")["append_entry"]
    dig = os.urandom(v.digest_len)
    payload = os.urandom(v.payload_len)
    execute = db.execute
    clock = time.time
    gc.collect()
    start = time.perf_counter()
    for seq in range(n):
        started = clock()
        row = (run_id, seq, "step", v.step_name, dig, "ok", 1, started, clock(), payload)
        if execute(sql, (*row, run_id, 1)).rowcount != 1:
            raise RuntimeError("fenced insert failed")
    elapsed = time.perf_counter() - start
    db.close()
    return elapsed


# -- driver ------------------------------------------------------------------------------------
def measure(
    files: common.FreshFiles, v: Variant, durability: str, n: int, reps: int
) -> dict[str, Any]:
    sync = {"normal": "NORMAL", "full": "FULL"}[durability]
    floor, fenced, total, loop = [], [], [], []
    # one unmeasured warm-up of each, so imports and first-use caches are not in the figures
    _floor_once(files.path("warm-floor"), sync, v, min(n, 100))
    asyncio.run(_undying_once(files.path("warm-undying"), durability, v.key, min(n, 100)))
    for _ in range(reps):
        floor.append(_floor_once(files.path(f"floor-{v.key}-{durability}"), sync, v, n))
        t, lp = asyncio.run(
            _undying_once(files.path(f"undying-{v.key}-{durability}"), durability, v.key, n)
        )
        total.append(t)
        loop.append(lp)
        fenced.append(_floor_fenced_once(files.path(f"fenced-{v.key}-{durability}"), sync, v, n))
    us = 1e6 / n
    return {
        "floor": common.median(floor) * us,
        "fenced": common.median(fenced) * us,
        "undying": common.median(total) * us,
        "loop": common.median(loop) * us,
        "ratio": common.median([t / f for t, f in zip(total, floor, strict=True)]),
        "ratio_spread": common.spread([t / f for t, f in zip(total, floor, strict=True)]),
        "spread": common.spread([t * us for t in total]),
        "floor_spread": common.spread([t * us for t in floor]),
        "samples": {
            "undying": [t * us for t in total],
            "floor": [t * us for t in floor],
            "fenced": [t * us for t in fenced],
            "ratio": common.paired_ratios(total, floor),
        },
    }


def record(figures: common.Figures, v: Variant, durability: str, n: int, r: dict[str, Any]) -> None:
    meta = {"backend": "sqlite", "durability": durability, "step": v.key, "n": n}
    base = f"step_overhead.sqlite.{durability}.{v.key}.n{n}"
    samples = r["samples"]
    figures.add(base, f"undying, {v.label}", "us/step", samples["undying"], **meta)
    figures.add(
        f"{base}.floor", "floor: sqlite3 INSERT autocommit", "us/step", samples["floor"], **meta
    )
    figures.add(
        f"{base}.fenced",
        "floor-fenced: undying's append_entry",
        "us/step",
        samples["fenced"],
        **meta,
    )
    figures.add(
        f"{base}.ratio",
        "undying / floor (paired)",
        "x",
        samples["ratio"],
        target=TARGET_RATIO if v.key == "noop" else None,
        **meta,
    )


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", default=None, help="steps per workflow, a comma list (default 1000)")
    p.add_argument(
        "--durability",
        choices=["normal", "full", "both"],
        default="both",
    )
    p.add_argument(
        "--variants",
        default="noop,work,sync",
        help="comma list of: noop, work, sync",
    )
    args = p.parse_args(argv)
    ns = common.sizes(args.steps or ("500" if args.quick else "1000"))
    reps = args.reps or (3 if args.quick else 7)
    durabilities = ["normal", "full"] if args.durability == "both" else [args.durability]
    wanted = set(args.variants.split(","))
    variants = [v for v in _variants() if v.key in wanted]

    figures = common.Figures("step_overhead")
    print(f"step overhead: {ns} sequential steps per workflow, median of {reps}")
    print(common.env_line())
    rows = []
    summary = []
    with common.temp_dir(args.tmp) as root:
        files = common.FreshFiles(root)
        for n, durability, v in ((n, d, v) for n in ns for d in durabilities for v in variants):
            r = measure(files, v, durability, n, reps)
            record(figures, v, durability, n, r)
            ratio = r["ratio"]
            rows.append(
                [
                    v.label,
                    durability,
                    n,
                    r["floor"],
                    r["undying"],
                    ratio,
                    r["loop"],
                    r["fenced"],
                    r["ratio_spread"],
                ]
            )
            print(
                f"  .. {v.label:<30} {durability:<6} N={n:<5} floor {r['floor']:7.1f} us  "
                f"undying {r['undying']:7.1f} us  x{ratio:.2f}",
                flush=True,
            )
            target = v.key == "noop"
            summary.append(
                common.summary_line(
                    f"step overhead, {v.label}, {durability}, N={n}",
                    f"{r['undying']:.1f} us/step = {ratio:.2f}x floor ({r['floor']:.1f} us)",
                    f"<= {TARGET_RATIO}x" if target else "(info)",
                    ratio <= TARGET_RATIO if target else None,
                )
            )
    print()
    print(
        common.table(
            "Per-step cost (us/step, medians)",
            [
                "step",
                "durability",
                "N",
                "floor",
                "undying",
                "ratio",
                "in-loop",
                "floor-fenced",
                "ratio min..max",
            ],
            rows,
        )
    )
    print()
    print(f"target: async no-op ratio <= {TARGET_RATIO}x the floor")
    figures.write(args.json)
    common.emit_summary(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
