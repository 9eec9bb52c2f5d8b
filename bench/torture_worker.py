"""The crash-torture workload, and the worker process that ``torture.py`` keeps killing.

    python torture_worker.py JOURNAL_DB EFFECTS_DB STOP_FILE [--concurrency N] [--tx-work S]

A worker opens the App on the shared journal (which recovers at once every run of a dead
worker: its lock file is free) and executes runs until ``STOP_FILE`` exists. It prints
``ready`` once its recovery claim is done.

One run of workflow ``torture`` executes a *plan*: a list of operations derived from the
harness seed and the run number, one journal entry per operation, so the operation at plan
position ``k`` is journal entry ``k`` and its idempotency key is ``<run_id>:<k>``.

* ``keyed``  a plain (at-least-once) step whose effect is an insert-or-ignore keyed by
  ``undying.idempotency_key()`` into ``keyed``; every execution also appends a row to
  ``keyed_attempts``, so re-executions are visible.
* ``tx``     ``ctx.transaction`` writing one row to ``tx_effects`` in the journal database
  through the journal's own connection (and, outside that transaction, a row to
  ``tx_attempts`` in the effects database, so a rolled-back attempt is visible).
* ``amo``    an ``at_most_once`` step: appends to ``amo_started`` when its body starts and to
  ``amo_effects`` when its effect happens. ``StepInDoubt`` is caught and recorded in the
  result as ``{"in_doubt": key}``.
* ``now`` / ``random``  recorded values, put in the result (checked against the journal).
* ``sleep``  a durable ``ctx.sleep``; the longer ones release the run (``suspend_after``).

Step bodies pause for a random instant before and after their effect so that a kill lands
inside them often. Every value that feeds the result is a pure function of the inputs
(``expected_result``), except the recorded ``now``/``random`` values.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sqlite3
import sys
import time
from typing import Any

import undying
from undying import App, Context, StepInDoubt

KIND_WEIGHTS = {"keyed": 30, "tx": 20, "amo": 15, "now": 10, "random": 10, "sleep": 15}
SLEEPS = (0.0, 0.02, 0.05, 0.15, 0.3)  # above SUSPEND_AFTER: the run is released and re-claimed
SUSPEND_AFTER = 0.1
MAX_PAUSE = 0.01
#: seconds of work (at most) inside each open transaction; set by --tx-work
max_tx_work = 0.0
#: (journal kind, journal name) each operation must leave
JOURNAL_SHAPE = {
    "keyed": ("step", "keyed"),
    "tx": ("tx", "torture_worker:tx_write"),
    "amo": ("step", "amo"),
    "now": ("now", "now"),
    "random": ("random", "random"),
    "sleep": ("sleep", "sleep"),
}

EFFECTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS keyed (
    key TEXT PRIMARY KEY, run_id TEXT NOT NULL, k INTEGER NOT NULL, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS keyed_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, run_id TEXT NOT NULL,
    k INTEGER NOT NULL, pid INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tx_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, k INTEGER NOT NULL,
    pid INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS amo_started (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, run_id TEXT NOT NULL,
    k INTEGER NOT NULL, attempt INTEGER NOT NULL, pid INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS amo_effects (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, run_id TEXT NOT NULL,
    k INTEGER NOT NULL, value INTEGER NOT NULL, pid INTEGER NOT NULL);
"""
#: the transactional effect lives in the journal database (ctx.transaction's connection)
JOURNAL_EFFECTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS tx_effects (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, k INTEGER NOT NULL,
    value INTEGER NOT NULL);
"""


# -- inputs and the expected outcome (pure) ---------------------------------------------------
def run_id_for(run_no: int) -> str:
    return f"t{run_no:06d}"


def plan_for(seed: int, run_no: int, steps: int) -> list[list[Any]]:
    """The operations of run ``run_no``: ``[kind, arg]`` pairs, a pure function of the seed."""
    rng = random.Random(f"undying-torture:{seed}:{run_no}")
    kinds = rng.choices(list(KIND_WEIGHTS), weights=list(KIND_WEIGHTS.values()), k=steps)
    return [[kind, rng.choice(SLEEPS) if kind == "sleep" else None] for kind in kinds]


def value(run_no: int, k: int, acc: int) -> int:
    return (acc * 1_000_003 + run_no * 7_919 + k * 104_729 + 12_345) % 2_147_483_647


def expected_result(run_no: int, plan: list[list[Any]]) -> dict[str, Any]:
    """The result of an uncrashed run, with ``None`` where a recorded now/random value goes."""
    acc = run_no
    ops: list[Any] = []
    for k, (kind, arg) in enumerate(plan):
        if kind in ("keyed", "tx"):
            acc = value(run_no, k, acc)
            ops.append(acc)
        elif kind == "amo":
            ops.append(value(run_no, k, 0))
        elif kind == "sleep":
            ops.append(arg)
        else:
            ops.append(None)
    return {"run": run_no, "acc": acc, "ops": ops}


# -- effects ---------------------------------------------------------------------------------
_effects: sqlite3.Connection | None = None
_jitter = random.Random()


def create_effects_schema(path: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(EFFECTS_SCHEMA)
    conn.close()


def configure_effects(path: str) -> None:
    """Open this process's connection to the effects database (each step body uses it)."""
    global _effects
    _effects = sqlite3.connect(path, isolation_level=None, timeout=60)
    # WAL + NORMAL loses nothing when a process dies (the kills here); only power loss would.
    _effects.execute("PRAGMA synchronous=NORMAL")


def _effect(sql: str, params: tuple[Any, ...]) -> None:
    assert _effects is not None, "configure_effects() first"
    _effects.execute(sql, params)


async def _pause() -> None:
    await asyncio.sleep(_jitter.uniform(0.0, MAX_PAUSE))


@undying.step(name="keyed")
async def keyed(run_no: int, k: int, acc: int) -> int:
    info = undying.current_step()
    assert info is not None
    key = undying.idempotency_key()
    _effect(
        "INSERT INTO keyed_attempts (key, run_id, k, pid) VALUES (?, ?, ?, ?)",
        (key, info.run_id, k, os.getpid()),
    )
    await _pause()
    result = value(run_no, k, acc)
    _effect(
        "INSERT OR IGNORE INTO keyed (key, run_id, k, value) VALUES (?, ?, ?, ?)",
        (key, info.run_id, k, result),
    )
    await _pause()
    return result


def tx_write(conn: sqlite3.Connection, run_id: str, k: int, result: int) -> int:
    # Outside the transaction (another database, autocommit): survives its rollback.
    _effect("INSERT INTO tx_attempts (run_id, k, pid) VALUES (?, ?, ?)", (run_id, k, os.getpid()))
    conn.execute("INSERT INTO tx_effects (run_id, k, value) VALUES (?, ?, ?)", (run_id, k, result))
    # Work inside the open transaction (fn is sync: it holds the loop), so kills land here too.
    if max_tx_work:
        time.sleep(_jitter.uniform(0.0, max_tx_work))
    return result


@undying.step(name="amo", at_most_once=True)
async def amo(run_no: int, k: int) -> int:
    info = undying.current_step()
    assert info is not None
    key = undying.idempotency_key()
    _effect(
        "INSERT INTO amo_started (key, run_id, k, attempt, pid) VALUES (?, ?, ?, ?, ?)",
        (key, info.run_id, k, info.attempt, os.getpid()),
    )
    await _pause()
    result = value(run_no, k, 0)
    _effect(
        "INSERT INTO amo_effects (key, run_id, k, value, pid) VALUES (?, ?, ?, ?, ?)",
        (key, info.run_id, k, result, os.getpid()),
    )
    await _pause()
    return result


# -- the app ---------------------------------------------------------------------------------
def build_app(journal_db: str, *, worker: bool = True, concurrency: int = 8) -> App:
    app = App(
        journal_db,
        worker=worker,
        strict=worker,
        suspend_after=SUSPEND_AFTER,
        poll_interval=0.25,
        max_concurrent_runs=concurrency,
    )

    @app.workflow(name="torture")
    async def torture(ctx: Context, run_no: int, plan: list[list[Any]]) -> dict[str, Any]:
        acc = run_no
        ops: list[Any] = []
        for k, (kind, arg) in enumerate(plan):
            if kind == "keyed":
                acc = await keyed(run_no, k, acc)
                ops.append(acc)
            elif kind == "tx":
                acc = await ctx.transaction(tx_write, ctx.run_id, k, value(run_no, k, acc))
                ops.append(acc)
            elif kind == "amo":
                try:
                    ops.append(await amo(run_no, k))
                except StepInDoubt as exc:
                    ops.append({"in_doubt": exc.idempotency_key})
            elif kind == "now":
                ops.append(ctx.now().isoformat())
            elif kind == "random":
                ops.append(ctx.random())
            elif kind == "sleep":
                await ctx.sleep(arg)
                ops.append(arg)
            else:
                raise ValueError(f"unknown operation {kind!r}")
        return {"run": run_no, "acc": acc, "ops": ops}

    return app


async def serve(journal_db: str, effects_db: str, stop_file: str, concurrency: int) -> None:
    configure_effects(effects_db)
    app = build_app(journal_db, concurrency=concurrency)
    async with app:
        print("ready", flush=True)
        while not os.path.exists(stop_file):
            await asyncio.sleep(0.05)  # polls for the harness's stop request
    print("stopped", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("journal_db")
    parser.add_argument("effects_db")
    parser.add_argument("stop_file")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--tx-work", type=float, default=0.0, help="max seconds inside a tx")
    args = parser.parse_args(argv)
    global max_tx_work
    max_tx_work = args.tx_work
    logging.basicConfig(
        level=logging.WARNING,
        format=f"%(levelname)s pid={os.getpid()} %(name)s: %(message)s",
        stream=sys.stderr,
    )
    asyncio.run(serve(args.journal_db, args.effects_db, args.stop_file, args.concurrency))


if __name__ == "__main__":
    # Import this file as the module ``torture_worker``, so step and transaction names are the
    # same in a worker process as in the harness that imports it.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torture_worker

    torture_worker.main()
