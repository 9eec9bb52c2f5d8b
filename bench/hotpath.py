"""Where the time of a step and of a short workflow goes (a diagnostic, not a target).

1. Python overhead per step: the step_overhead workflows with ``SQLiteStore.write_entries``
   replaced by a no-op coroutine in this process, so what remains is undying's own Python
   (context, codec, digest, contextvars, the thread hop for sync steps). Compared with the
   same loop calling the undecorated function directly (the cost of the loop and the call).

2. SQL statements per one-step workflow: the throughput benchmark's sequential and concurrent
   loops with the store's connection wrapped in a proxy that counts and times every
   statement. ``us/wf`` is the time spent inside ``execute`` per workflow; the rest of the
   workflow's wall time is Python and the event loop.

3. Argument digests: the cost of ``digest(codec.encode((args, kwargs)))``, which runs for every
   step call, on first execution and on every replay, compared with encoding the same values
   as lists (no tuple ext types).

This script patches undying classes inside its own process only.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import os
import sys
import time
import timeit
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as common
import step_overhead
import throughput

from undying.codec import Codec, digest
from undying.store import sqlite as sqlite_store


# -- 1 ------------------------------------------------------------------------------------------
async def _no_write(
    self: Any, run_id: str, epoch: int, entries: Any, *, durable: bool = False
) -> None:
    return None


async def _direct_loop(kind: str, n: int) -> float:
    fns = {
        "noop": step_overhead.noop.__undying_target__,  # type: ignore[attr-defined]
        "work": step_overhead.work.__undying_target__,  # type: ignore[attr-defined]
    }
    gc.collect()
    start = time.perf_counter()
    if kind == "sync":
        fn = step_overhead.noop_sync.__undying_target__  # type: ignore[attr-defined]
        for _ in range(n):
            await asyncio.to_thread(fn)
    elif kind == "work":
        for i in range(n):
            await fns["work"](i)
    else:
        for _ in range(n):
            await fns["noop"]()
    return time.perf_counter() - start


def python_overhead(files: common.FreshFiles, n: int, reps: int) -> list[list[Any]]:
    original = sqlite_store.SQLiteStore.write_entries
    sqlite_store.SQLiteStore.write_entries = _no_write  # type: ignore[method-assign]
    rows = []
    try:
        for v in step_overhead._variants():
            loops, direct = [], []
            for _ in range(reps):
                _, loop = asyncio.run(
                    step_overhead._undying_once(files.path("stub"), "normal", v.key, n)
                )
                loops.append(loop)
                direct.append(asyncio.run(_direct_loop(v.key, n)))
            u = common.median(loops) / n * 1e6
            d = common.median(direct) / n * 1e6
            rows.append([v.label, d, u, u - d])
    finally:
        sqlite_store.SQLiteStore.write_entries = original  # type: ignore[method-assign]
    return rows


# -- 2 ------------------------------------------------------------------------------------------
class _Proxy:
    def __init__(self, db: Any, stats: dict[str, list[float]]) -> None:
        self._db = db
        self._stats = stats

    def execute(self, sql: str, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return self._db.execute(sql, *args)
        finally:
            key = " ".join(sql.split())[:64]
            s = self._stats[key]
            s[0] += 1
            s[1] += time.perf_counter() - start

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def sql_profile(files: common.FreshFiles, n: int, mode: str) -> tuple[float, list[list[Any]]]:
    stats: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    original = sqlite_store.SQLiteStore.connect

    async def connect(self: Any) -> Any:
        db = await original(self)
        if not isinstance(db, _Proxy):
            self._db = _Proxy(db, stats)
        return self._db

    sqlite_store.SQLiteStore.connect = connect  # type: ignore[method-assign]
    try:
        elapsed, _ = asyncio.run(throughput._undying(files.path(f"sql-{mode}"), n, "normal", mode))
    finally:
        sqlite_store.SQLiteStore.connect = original  # type: ignore[method-assign]
    total = sum(s[1] for s in stats.values())
    rows: list[list[Any]] = [
        [key, count / n, secs / n * 1e6]
        for key, (count, secs) in sorted(stats.items(), key=lambda kv: -kv[1][1])
        if count / n >= 0.01
    ]
    rows.append(["(all statements)", sum(s[0] for s in stats.values()) / n, total / n * 1e6])
    rows.append(["(wall time per workflow)", "", elapsed / n * 1e6])
    return elapsed, rows


# -- 3 ------------------------------------------------------------------------------------------
def digest_costs() -> list[list[Any]]:
    codec = Codec(compress_threshold=1 << 62)  # as App.digest_codec
    cases = {
        "no arguments (shortcut: b'')": None,
        "(i,)": ((5,), {}),
        "(query: str, k: int)": (("what is a durable workflow?", 10), {}),
        "(messages: list[dict])": (([{"role": "user", "content": "x" * 200}] * 4,), {}),
    }
    rows = []
    for label, value in cases.items():
        if value is None:
            rows.append([label, 0.0, 0.0])
            continue
        args, kwargs = value
        n = 20_000
        names = {"digest": digest, "codec": codec, "args": args, "kwargs": kwargs}
        t_now = timeit.timeit("digest(codec.encode((args, kwargs)))", number=n, globals=names)
        t_list = timeit.timeit(
            "digest(codec.encode([list(args), kwargs]))", number=n, globals=names
        )
        rows.append([label, t_now / n * 1e6, t_list / n * 1e6])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    args = p.parse_args(argv)
    n = 1000 if args.quick else 3000
    reps = args.reps or (3 if args.quick else 5)
    print(f"hot path decomposition: {n} steps / workflows, median of {reps}")
    print(common.env_line())
    with common.temp_dir(args.tmp) as root:
        files = common.FreshFiles(root)
        rows1 = python_overhead(files, n, reps)
        print()
        print(
            common.table(
                "1. Python cost per step, journal writes stubbed out (us/step, medians)",
                ["step", "plain await/to_thread", "undying, no writes", "undying's own Python"],
                rows1,
            )
        )
        for mode in ("sequential", "concurrent"):
            _, rows2 = sql_profile(files, n, mode)
            print()
            print(
                common.table(
                    f"2. SQL per one-step workflow, {mode} ({n} workflows, one run)",
                    ["statement (first 64 chars)", "per wf", "us/wf"],
                    rows2,
                )
            )
    print()
    print(
        common.table(
            "3. Argument digest per step call (us)",
            ["arguments", "digest(encode((args, kwargs)))", "same values as lists"],
            digest_costs(),
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
