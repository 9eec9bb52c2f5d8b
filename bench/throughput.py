"""Workflows per second: many short runs in one process.

* sequential: ``async with app:``, then N times ``handle = await app.start(wf, i)`` followed by
  ``await handle.result()``, one run after another. Each run is one async step.
* concurrent: N runs started one after another, then all awaited with ``asyncio.gather``.

Baselines (same run, same kind of file), with Python's sqlite3 on undying's schema (all
migrations): ``3 commits``: INSERT the run row, INSERT its one journal entry, UPDATE the run to
completed, each its own autocommit transaction; ``2 commits``: the run row, then the entry and
the completion in one ``BEGIN IMMEDIATE`` transaction, which is what undying does now (the last
step's entry rides with the run's finish; see Recorder.hold). Their rates are the ceilings for
a sequential run that commits that way.

Stability: each durability gets one unmeasured warm-up repetition of every mode (page cache,
first-use costs); then every repetition uses a fresh database file and runs the modes in a
rotating order, so no mode always goes first; garbage is collected and the survivors frozen
(``gc.freeze``) before each timed loop, so collections during it scan only its own garbage.
Each figure is the median of the repetitions with min..max; ratios are medians of
per-repetition ratios against the ``3 commits`` baseline of the same repetition. ``commits/wf``
and ``stmts/wf`` are counted (not timed) on 100 extra runs: they are deterministic, and say
which way a change went even when the machine is noisy.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as common

import undying
from undying import App
from undying.codec import Codec

TARGET_SEQUENTIAL = 5_000.0
SYNC = {"normal": "NORMAL", "full": "FULL"}


@undying.step(name="bench.one")
async def one(i: int) -> int:
    return i + 1


async def one_step_workflow(ctx: undying.Context, i: int) -> int:
    return await one(i)


def _frozen_gc() -> None:
    """Collect, then move every survivor to the permanent generation: a collection in the
    timed loop then scans the loop's own objects only, not whatever came before it."""
    gc.collect()
    gc.freeze()


class _Counter:
    """Statements and commits on one sqlite3 connection (its trace callback).

    SQLite reports a statement again when one of its triggers starts (runs_wake_parent, on
    every status update), with the same expanded text: a repeat of the previous text is
    that, not a statement of its own (the texts carry their bound values, so two real
    statements in a row are never the same here)."""

    def __init__(self) -> None:
        self.statements = 0
        self.commits = 0
        self._in_tx = False
        self._last = ""

    def __call__(self, sql: str) -> None:
        if sql == self._last:
            return
        self._last = sql
        word = sql.lstrip()[:8].upper()
        self.statements += 1
        if word.startswith("BEGIN"):
            self._in_tx = True
        elif word.startswith("COMMIT"):
            self._in_tx = False
            self.commits += 1
        elif not self._in_tx and word.startswith(("INSERT", "UPDATE", "DELETE")):
            self.commits += 1  # autocommit: the statement is its own transaction


async def _one_by_one(app: App, wf: Any, n: int) -> None:
    for i in range(n):
        handle = await app.start(wf, i)
        await handle.result()


async def _all_at_once(app: App, wf: Any, n: int) -> None:
    handles = [await app.start(wf, i) for i in range(n)]
    results = await asyncio.gather(*(h.result() for h in handles))
    if results != [i + 1 for i in range(n)]:
        raise RuntimeError("wrong results")


async def _undying(
    path: str, n: int, durability: str, mode: str, count: int = 0
) -> tuple[float, _Counter | None]:
    """Seconds for ``n`` runs of ``mode`` (sequential or concurrent) on a fresh App, and,
    with ``count``, the statements and commits of ``count`` more runs (not timed)."""
    go = _one_by_one if mode == "sequential" else _all_at_once
    app = App(path, durability=durability)
    wf = app.workflow(name="bench.throughput")(one_step_workflow)
    async with app:
        # one unmeasured run: first-use costs (statement cache, codec pools) are not in it
        await (await app.start(wf, -1)).result()
        _frozen_gc()
        try:
            start = time.perf_counter()
            await go(app, wf, n)
            elapsed = time.perf_counter() - start
        finally:
            gc.unfreeze()
        counter = None
        if count:
            counter = _Counter()
            db: sqlite3.Connection = app.store.db  # type: ignore[attr-defined]
            db.set_trace_callback(counter)
            await go(app, wf, count)
            db.set_trace_callback(None)
    return elapsed, counter


def _baseline(path: str, n: int, synchronous: str, *, commits: int = 3) -> float:
    """A one-step run's writes on undying's own schema: three autocommit statements, or
    (``commits=2``) the run row, then the entry and the completion in one transaction."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.executescript(common.undying_schema())
    codec = Codec()
    arg = codec.encode(((1,), {}))
    out = codec.encode(2)
    execute = db.execute
    clock = time.time
    together = commits == 2
    _frozen_gc()
    try:
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
            if together:
                execute("BEGIN IMMEDIATE")
            execute(
                "INSERT INTO journal VALUES (?, 0, 'step', 'bench.one', ?, 'ok', 1, ?, ?, ?)",
                (run_id, b"0123456789abcdef", clock(), clock(), out),
            )
            execute(
                "UPDATE runs SET status = 'completed', output = ?, owner = NULL, "
                "lease_expires = NULL, updated_at = ? WHERE run_id = ? AND epoch = 1",
                (out, clock(), run_id),
            )
            if together:
                execute("COMMIT")
            del i
        elapsed = time.perf_counter() - start
    finally:
        gc.unfreeze()
    db.close()
    return elapsed


def _seconds(path: str, n: int, durability: str, mode: str) -> float:
    return asyncio.run(_undying(path, n, durability, mode))[0]


MODES = ("baseline3", "baseline2", "sequential", "concurrent")
LABELS = {
    "baseline3": "baseline: 3 commits per run (sqlite3)",
    "baseline2": "baseline: 2 commits per run (sqlite3)",
    "sequential": "undying sequential (start + await result)",
    "concurrent": "undying concurrent (start all, gather)",
}


def _measure(
    files: common.FreshFiles, durability: str, n: int, cn: int, reps: int
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Rates per mode (one per repetition) after a warm-up, and the counted statements."""
    sync = SYNC[durability]
    runs: dict[str, Callable[[int], float]] = {
        "baseline3": lambda k: n / _baseline(files.path("base3"), n, sync, commits=3),
        "baseline2": lambda k: n / _baseline(files.path("base2"), n, sync, commits=2),
        "sequential": lambda k: n / _seconds(files.path("seq"), n, durability, "sequential"),
        "concurrent": lambda k: cn / _seconds(files.path("conc"), cn, durability, "concurrent"),
    }
    for mode in MODES:  # warm-up, not recorded
        runs[mode](0)
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    for rep in range(reps):
        order = MODES[rep % len(MODES) :] + MODES[: rep % len(MODES)]
        for mode in order:
            rates[mode].append(runs[mode](rep))
        print(
            f"  .. {durability} rep {rep + 1}: "
            + "  ".join(f"{m} {rates[m][-1]:,.0f}/s" for m in MODES),
            flush=True,
        )
    counts = {
        mode: asyncio.run(_undying(files.path(f"count-{mode}"), 1, durability, mode, 100))[1]
        for mode in ("sequential", "concurrent")
    }
    return rates, counts


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("-n", "--workflows", type=int, default=None, help="runs per repetition")
    p.add_argument(
        "--durability",
        default="normal",
        help="comma list of normal, full (default: normal; the target is judged on normal)",
    )
    p.add_argument(
        "--concurrent-n",
        type=int,
        default=None,
        help="runs per concurrent repetition (default: same as -n)",
    )
    args = p.parse_args(argv)
    durabilities = [d.strip() for d in args.durability.split(",") if d.strip()]
    if not durabilities or any(d not in SYNC for d in durabilities):
        raise SystemExit(
            f"--durability takes a comma list of normal, full, not {args.durability!r}"
        )
    n = args.workflows or (500 if args.quick else 2000)
    cn = args.concurrent_n or n
    reps = args.reps or (3 if args.quick else 7)

    print(
        f"throughput: {n} one-step workflows per repetition, median of {reps} after a warm-up, "
        f"durability={','.join(durabilities)}"
    )
    print(common.env_line())
    figures = common.Figures("throughput")
    summary: list[str] = []
    with common.temp_dir(args.tmp) as root:
        files = common.FreshFiles(root)
        for durability in durabilities:
            rates, counts = _measure(files, durability, n, cn, reps)
            summary += _report(figures, durability, n, cn, rates, counts)
    figures.write(args.json)
    common.emit_summary(summary)
    return 0


def _report(
    figures: common.Figures,
    durability: str,
    n: int,
    cn: int,
    rates: dict[str, list[float]],
    counts: dict[str, Any],
) -> list[str]:
    base = rates["baseline3"]
    med = {m: common.median(r) for m, r in rates.items()}
    ratio = {
        m: common.median([x / y for x, y in zip(r, base, strict=True)]) for m, r in rates.items()
    }
    fixed = {"baseline3": (3.0, 3.0), "baseline2": (2.0, 5.0)}
    rows: list[list[Any]] = []
    for mode in MODES:
        counter = counts.get(mode)
        commits, stmts = (
            fixed[mode] if counter is None else (counter.commits / 100, counter.statements / 100)
        )
        runs = cn if mode == "concurrent" else n
        rows.append(
            [
                LABELS[mode],
                runs,
                med[mode],
                1e6 / med[mode],
                ratio[mode],
                commits,
                stmts,
                common.spread(rates[mode]),
            ]
        )
    print()
    print(
        common.table(
            f"Workflows per second, durability={durability} (medians)",
            [
                "mode",
                "runs",
                "wf/s",
                "us/wf",
                "x 3-commit",
                "commits/wf",
                "stmts/wf",
                "wf/s min..max",
            ],
            rows,
        )
    )
    print()
    judged = durability == "normal"
    if judged:
        print(f"target: sequential >= {TARGET_SEQUENTIAL:,.0f} wf/s (durability=normal)")
    meta = {"backend": "sqlite", "durability": durability, "n": n}
    base_id = f"throughput.sqlite.{durability}"
    figures.add(f"{base_id}.baseline", LABELS["baseline3"], "wf/s", base, better="higher", **meta)
    figures.add(
        f"{base_id}.baseline2",
        LABELS["baseline2"],
        "wf/s",
        rates["baseline2"],
        better="higher",
        **meta,
    )
    figures.add(
        f"{base_id}.sequential",
        "undying sequential 1-step workflows",
        "wf/s",
        rates["sequential"],
        better="higher",
        **({"target": TARGET_SEQUENTIAL} if judged else {}),
        **meta,
    )
    figures.add(
        f"{base_id}.sequential.ratio",
        "sequential / baseline (paired)",
        "x",
        common.paired_ratios(rates["sequential"], base),
        better="higher",
        **meta,
    )
    figures.add(
        f"{base_id}.concurrent",
        "undying concurrent 1-step workflows",
        "wf/s",
        rates["concurrent"],
        better="higher",
        **{**meta, "n": cn},
    )
    s, b = med["sequential"], med["baseline3"]
    return [
        common.summary_line(
            f"throughput, sequential 1-step workflows, durability={durability}",
            f"{s:,.0f} wf/s ({ratio['sequential']:.2f}x of a {b:,.0f}/s 3-commit baseline)",
            f">= {TARGET_SEQUENTIAL:,.0f}/s" if judged else "(info)",
            s >= TARGET_SEQUENTIAL if judged else None,
        ),
        common.summary_line(
            f"throughput, {cn} concurrent 1-step workflows, durability={durability}",
            f"{med['concurrent']:,.0f} wf/s",
            "(info)",
            None,
        ),
    ]


if __name__ == "__main__":
    raise SystemExit(main())
