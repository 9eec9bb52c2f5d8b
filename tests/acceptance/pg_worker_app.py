"""The app the PostgreSQL acceptance tests run in ``undying worker pg_worker_app:app``.

``UNDYING_DATABASE_URL`` names the test's own database (read when ``app`` is built and when a
step runs); the test creates the two tables this
module writes to (``EFFECTS_DDL``) before any worker starts.

Workflow ``pgw.steps(n)`` makes ``STEPS`` plain steps, one after another, then one
``ctx.transaction``:

* every execution of a step body appends a row to ``effects`` (run id, journal position, pid
  of the worker, a fresh execution id) over a connection of its own, so the journal knows
  nothing about it: a second execution of a step (the worker died after the effect, before
  the journal write) shows as a second row. The step returns the execution id, so the journal
  says which execution it recorded;
* the transaction appends the run's row to ``completions`` inside the journal's own
  transaction: exactly once per run, however often the run was taken over.

Settings (environment): ``PGW_LEASE_TTL`` (seconds, default 2), ``PGW_MAX_RUNS`` (runs one
worker executes at a time, default 20, so the runs spread over the workers),
``PGW_STEP_PAUSE`` (seconds each step body waits after its effect, default 0).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import psycopg

import undying
from undying import App, Context

STEPS = 10
WORKFLOW = "pgw.steps"
EFFECTS_DDL = """
CREATE TABLE effects (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id  TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    pid     INTEGER NOT NULL,
    exec_id TEXT NOT NULL,
    at      TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE completions (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id  TEXT NOT NULL,
    pid     INTEGER NOT NULL,
    total   BIGINT NOT NULL
);
"""

STEP_PAUSE = float(os.environ.get("PGW_STEP_PAUSE", "0"))

_effects: psycopg.AsyncConnection[Any] | None = None


async def _effects_connection() -> psycopg.AsyncConnection[Any]:
    """One connection per process for the effects (psycopg serialises concurrent users)."""
    global _effects
    if _effects is None or _effects.closed or _effects.broken:
        _effects = await psycopg.AsyncConnection.connect(
            os.environ["UNDYING_DATABASE_URL"], autocommit=True, connect_timeout=5
        )
    return _effects


def expected_value(n: int, i: int) -> int:
    return n * 100 + i


def expected_total(n: int) -> int:
    return sum(expected_value(n, i) for i in range(STEPS))


# Retried (with backoff) so a step whose effect connection was cut by a server restart
# runs again instead of failing the run.
@undying.step(name="pgw.effect", retries=40, retry_delay=0.05, backoff=2.0, max_delay=1.0)
async def effect(value: int) -> dict[str, Any]:
    info = undying.current_step()
    assert info is not None
    exec_id = uuid.uuid4().hex
    conn = await _effects_connection()
    try:
        await conn.execute(
            "INSERT INTO effects (run_id, seq, pid, exec_id) VALUES (%s, %s, %s, %s)",
            (info.run_id, info.seq, os.getpid(), exec_id),
        )
    except psycopg.OperationalError:
        await conn.close()
        raise
    if STEP_PAUSE:
        await asyncio.sleep(STEP_PAUSE)  # the step's "work"
    return {"exec": exec_id, "value": value}


async def record_completion(conn: psycopg.AsyncConnection[Any], run_id: str, total: int) -> int:
    await conn.execute(
        "INSERT INTO completions (run_id, pid, total) VALUES (%s, %s, %s)",
        (run_id, os.getpid(), total),
    )
    return total


async def steps(ctx: Context, n: int) -> dict[str, Any]:
    execs: list[str] = []
    total = 0
    for i in range(STEPS):
        done = await effect(expected_value(n, i))
        execs.append(done["exec"])
        total += done["value"]
    await ctx.transaction(record_completion, ctx.run_id, total)
    return {"n": n, "total": total, "execs": execs}


def make_app(url: str | None, *, worker: bool = True) -> App:
    """An App on ``url`` with ``pgw.steps`` registered (``worker=False``: a pure client)."""
    made = App(
        url,
        worker=worker,
        lease_ttl=float(os.environ.get("PGW_LEASE_TTL", "2.0")),
        max_concurrent_runs=int(os.environ.get("PGW_MAX_RUNS", "20")),
    )
    made.workflow(name=WORKFLOW)(steps)
    return made


#: what ``undying worker pg_worker_app:app`` runs; the tests import this module for its
#: constants and ``make_app`` only, without UNDYING_DATABASE_URL (then ``app`` is never opened)
app = make_app(os.environ.get("UNDYING_DATABASE_URL"))
