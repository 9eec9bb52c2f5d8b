"""A process that runs one workflow and kills itself, for real, at a chosen point.

    python crash_worker.py DB EFFECTS_DB CRASH_POINTS

``CRASH_POINTS`` is ``none`` or a comma-separated list of ``<where>:<name>``, where ``where``
is ``before`` (inside a step, before its effect), ``after`` (inside a step, after its effect,
so before its result is journaled) or ``returned`` (in workflow code right after the call
returned, so after its journal write), and ``name`` is one of ``fetch``, ``compute`` (a sync
step, run in a thread), ``ledger`` (a ``ctx.transaction``), ``charge`` (at-most-once) or
``notify``. Each point fires once (a marker file next to the effects database remembers it),
by ``SIGKILL`` of this very process: no ``finally``, no atexit, no flush.

Every execution of a step body appends rows to the effects database, a file of its own that
the journal knows nothing about: ``enter`` when the body starts, ``effect`` when the outside
world changed, each with the idempotency key the body saw. Rows are appended, never
deduplicated, so a second execution is visible. The transaction writes its effect into the
``ledger`` table of the journal database through the connection it is given.

The script starts (or, when it already exists, recovers) run ``crash-1``, then prints
``result <json>``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

import undying
from undying import App, Context, StepInDoubt

RUN_ID = "crash-1"

DB, EFFECTS_DB, CRASH_POINTS = sys.argv[1], sys.argv[2], sys.argv[3]
_points = set() if CRASH_POINTS == "none" else set(CRASH_POINTS.split(","))
# check_same_thread=False: the sync step ``compute`` runs in a worker thread (one at a time).
_effects = sqlite3.connect(EFFECTS_DB, isolation_level=None, timeout=30, check_same_thread=False)
_effects.execute(
    "CREATE TABLE IF NOT EXISTS effects (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "step TEXT NOT NULL, phase TEXT NOT NULL, key TEXT NOT NULL, pid INTEGER NOT NULL)"
)
with sqlite3.connect(DB, isolation_level=None, timeout=30) as _journal_db:
    _journal_db.execute(
        "CREATE TABLE IF NOT EXISTS ledger (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "run_id TEXT NOT NULL, amount INTEGER NOT NULL)"
    )
_journal_db.close()


def crash_point(where: str, name: str) -> None:
    """SIGKILL this process the first time the point ``where:name`` is reached."""
    point = f"{where}:{name}"
    if point not in _points:
        return
    marker = Path(f"{EFFECTS_DB}.{where}-{name}.crashed")
    if marker.exists():
        return
    marker.write_text(str(os.getpid()))
    print(f"crashing at {point}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def record(step: str, phase: str, key: str) -> None:
    _effects.execute(
        "INSERT INTO effects (step, phase, key, pid) VALUES (?, ?, ?, ?)",
        (step, phase, key, os.getpid()),
    )


def run_step(name: str) -> str:
    """The body shared by the plain steps: enter, (crash), effect, (crash)."""
    key = undying.idempotency_key()
    record(name, "enter", key)
    crash_point("before", name)
    record(name, "effect", key)
    crash_point("after", name)
    return key


@undying.step
async def fetch(task: str) -> dict[str, Any]:
    run_step("fetch")
    return {"task": task, "hits": [len(task), len(task) * 2]}


@undying.step
def compute(hits: list[int]) -> int:
    run_step("compute")
    return sum(hits) * 10


def ledger(conn: sqlite3.Connection, amount: int) -> int:
    key = f"{RUN_ID}:ledger"
    record("ledger", "enter", key)
    crash_point("before", "ledger")
    conn.execute("INSERT INTO ledger (run_id, amount) VALUES (?, ?)", (RUN_ID, amount))
    record("ledger", "effect", key)  # a trace only: the effect itself is the ledger row
    crash_point("after", "ledger")  # the row is written but not committed yet
    return amount + 1


@undying.step(at_most_once=True)
async def charge(cents: int) -> str:
    key = run_step("charge")
    return f"ch_{cents}_{key}"


@undying.step
async def notify(text: str) -> str:
    run_step("notify")
    return text.upper()


app = App(DB, strict=True)


@app.workflow(name="crashy")
async def crashy(ctx: Context, task: str) -> dict[str, Any]:
    coin = ctx.random()  # recorded: flushed before the first step runs
    print(f"random {coin!r}", flush=True)
    found = await fetch(task)
    crash_point("returned", "fetch")
    total = await compute(found["hits"])
    crash_point("returned", "compute")
    booked = await ctx.transaction(ledger, total)
    crash_point("returned", "ledger")
    charged: Any
    try:
        charged = await charge(booked)
    except StepInDoubt as exc:
        charged = {"in_doubt": exc.idempotency_key, "step": exc.step_name}
    crash_point("returned", "charge")
    note = await notify(f"{task} booked {booked}")
    crash_point("returned", "notify")
    return {
        "random": coin,
        "found": found,
        "total": total,
        "booked": booked,
        "charged": charged,
        "note": note,
    }


async def main() -> None:
    async with app:
        handle = await app.start(crashy, "book a flight", run_id=RUN_ID)
        result = await handle.result(timeout=60)
    print("result " + json.dumps(result, sort_keys=True), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
    _effects.close()
