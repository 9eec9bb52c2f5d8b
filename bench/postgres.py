"""undying on PostgreSQL: per-step overhead against the floor, and throughput per worker count.

    .venv/bin/python bench/postgres.py                 # both parts
    .venv/bin/python bench/postgres.py --quick
    .venv/bin/python bench/postgres.py --part steps --reps 9
    .venv/bin/python bench/postgres.py --part throughput --runs 4000 --workers 1,2,4,8

The server is ``--server`` (default ``$UNDYING_TEST_PG_URL``, else
``postgresql://postgres@127.0.0.1:5432/postgres``); the script creates its own databases on
it and drops them at the end.

1. PER-STEP OVERHEAD. A workflow awaits N = 1,000 no-op async steps one after another, in
   this process (``App(url)``, ``async with app:``); the figure is the wall time from
   ``app.start`` to the awaited result, divided by N (creating and finishing the run are
   included, amortised). The FLOOR, measured in the same run against the same server: one
   ``INSERT`` per step with psycopg (async connection, autocommit, so the INSERT is its own
   transaction: one round trip and one durable COMMIT per step, a prepared statement), into a
   table of the journal's shape (``CREATE TABLE ... (LIKE journal INCLUDING ALL)``: same
   columns, primary key and indexes), rows of the same values and byte sizes undying writes.
   Floor and undying repetitions alternate; the ratio is the median of the paired ratios.
   ``floor-fenced`` (informational) runs undying's own ``append_entry`` statement (the epoch
   fence: INSERT ... SELECT FROM runs WHERE run_id AND epoch ... ON CONFLICT DO UPDATE) on
   undying's journal, the same way. Target: undying <= 1.5x the floor.

2. THROUGHPUT. 1, 2 and 4 worker processes (``undying worker postgres:app``, this file is the
   app module) on a fresh database; a client in this process (``App(url, worker=False)``)
   starts R = 2,000 one-step runs (10 starts in flight at a time, the client's pool size); the
   time is from just before the first start to the last run's finish (the largest
   ``updated_at`` of the completed runs, stamped by the workers with the same clock), so the
   waiting itself (LISTEN on undying's channel) adds nothing. Each worker executes at most
   ``--worker-concurrency`` runs at a time (``App(max_concurrent_runs=...)``; by default
   unlimited, which lets the first worker to wake claim everything pending at that moment).
   Figures: runs/s, and the client's own start rate (the throughput cannot exceed it).

   BACKLOG DRAIN (the same, without the client in the way): the workers are started, then
   SIGSTOPped; the client starts the R runs; all workers are continued at once, and the time
   is from SIGCONT to the last finish. Each worker executes at most ``--drain-concurrency``
   (default 100) runs at a time: unlimited, the first worker to wake would claim the whole
   backlog in one go and the others would find nothing to do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as common

import undying
from undying import App
from undying.codec import Codec

SERVER = os.environ.get("UNDYING_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TARGET_RATIO = 1.5
WORKFLOW_STEPS = "bench.pg.steps"
WORKFLOW_ONE = "bench.pg.one"


# -- the workload (also what the worker processes run: `undying worker postgres:app`) -----------
@undying.step(name="bench.noop")
async def noop() -> None:
    return None


@undying.step(name="bench.one")
async def one(i: int) -> int:
    return i + 1


async def steps_workflow(ctx: undying.Context, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await noop()
    return time.perf_counter() - start


async def one_step_workflow(ctx: undying.Context, i: int) -> int:
    return await one(i)


def make_app(url: str | None, *, worker: bool = True, concurrency: int | None = None) -> App:
    made = App(url, worker=worker, max_concurrent_runs=concurrency or 10_000)
    made.workflow(name=WORKFLOW_STEPS)(steps_workflow)
    made.workflow(name=WORKFLOW_ONE)(one_step_workflow)
    return made


_concurrency = os.environ.get("BENCH_PG_WORKER_CONCURRENCY")
#: the app of the worker processes (unused, never opened, when this file runs as a script)
app = make_app(
    os.environ.get("UNDYING_DATABASE_URL"), concurrency=int(_concurrency) if _concurrency else None
)


# -- databases ---------------------------------------------------------------------------------
@contextlib.contextmanager
def fresh_database(server: str) -> Iterator[str]:
    """A new database migrated to undying's schema; dropped afterwards."""
    import psycopg
    from psycopg import sql

    from undying.store.postgres import PostgresStore

    name = f"undying_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True, connect_timeout=5) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = urlsplit(server)._replace(path=f"/{name}").geturl()
        asyncio.run(PostgresStore(url).migrate())
        yield url
    finally:
        with psycopg.connect(server, autocommit=True, connect_timeout=5) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def server_line(server: str) -> str:
    import psycopg

    with psycopg.connect(server, autocommit=True, connect_timeout=5) as conn:
        settings = {
            name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in ("server_version", "synchronous_commit", "fsync", "wal_sync_method")
        }
    host = urlsplit(server).hostname
    return (
        f"PostgreSQL {settings.pop('server_version')} at {host} ("
        + ", ".join(f"{k}={v}" for k, v in settings.items())
        + ")"
    )


# -- 1. per-step overhead ------------------------------------------------------------------------
async def _undying_steps(url: str, n: int) -> tuple[float, float]:
    bench_app = make_app(url)
    async with bench_app:
        gc.collect()
        start = time.perf_counter()
        handle = await bench_app.start(WORKFLOW_STEPS, n)
        in_loop = await handle.result()
        total = time.perf_counter() - start
    return total, float(in_loop)


def _row_values() -> tuple[str, bytes, bytes]:
    """The step name, argument digest (none for a no-arg step) and payload undying writes."""
    return "bench.noop", b"", Codec().encode(None)


async def _floor(url: str, n: int, *, fenced: bool) -> float:
    """One INSERT (+ its COMMIT) per step, psycopg async, autocommit, prepared."""
    import psycopg

    from undying.store.sqlfiles import queries

    name, dig, payload = _row_values()
    run_id = uuid.uuid4().hex
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        if fenced:
            now = time.time()
            await conn.execute(
                "INSERT INTO runs (run_id, workflow, status, input, epoch, owner, created_at, "
                "updated_at) VALUES (%s, 'w', 'running', '\\x00', 1, 'bench', %s, %s)",
                (run_id, now, now),
            )
            sql = queries("postgres")["append_entry"]
        else:
            sql = (
                "INSERT INTO floor_journal (run_id, seq, kind, name, digest, status, attempt, "
                "started_at, finished_at, payload) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
                "%s, %s)"
            )
        clock = time.time
        execute = conn.execute
        gc.collect()
        start = time.perf_counter()
        for seq in range(n):
            started = clock()
            row = (run_id, seq, "step", name, dig, "ok", 1, started, clock(), payload)
            cur = await execute(sql, (*row, run_id, 1) if fenced else row, prepare=True)
            if cur.rowcount != 1:
                raise RuntimeError("the insert wrote nothing")
        return time.perf_counter() - start


async def _count_steps(url: str, n: int) -> tuple[float, float]:
    """Statements per step and server-session switches per step (deterministic, not timed):
    every ``AsyncCursor.execute`` (``AsyncConnection.execute`` goes through it) of the
    app's store during one ``n``-step run, and how often the next one ran on another
    server process than the one before."""
    import psycopg

    pids: list[int] = []
    original = psycopg.AsyncCursor.execute

    async def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        pids.append(self.connection.info.backend_pid)
        return await original(self, *args, **kwargs)

    bench_app = make_app(url)
    async with bench_app:
        await (await bench_app.start(WORKFLOW_STEPS, 10)).result()
        psycopg.AsyncCursor.execute = execute  # type: ignore[method-assign]
        try:
            await (await bench_app.start(WORKFLOW_STEPS, n)).result()
        finally:
            psycopg.AsyncCursor.execute = original  # type: ignore[method-assign]
    switches = sum(1 for a, b in itertools.pairwise(pids) if a != b)
    return len(pids) / n, switches / n


def measure_steps(server: str, n: int, reps: int) -> dict[str, Any]:
    floor: list[float] = []
    fenced: list[float] = []
    total: list[float] = []
    loop: list[float] = []
    with fresh_database(server) as url:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE floor_journal (LIKE journal INCLUDING ALL)")
        # one unmeasured warm-up of each: connections, prepared statements, first-use caches
        asyncio.run(_floor(url, min(n, 100), fenced=False))
        asyncio.run(_undying_steps(url, min(n, 100)))
        for _ in range(reps):
            floor.append(asyncio.run(_floor(url, n, fenced=False)))
            t, lp = asyncio.run(_undying_steps(url, n))
            total.append(t)
            loop.append(lp)
            fenced.append(asyncio.run(_floor(url, n, fenced=True)))
        statements, switches = asyncio.run(_count_steps(url, n))
    us = 1e6 / n
    ratios = [t / f for t, f in zip(total, floor, strict=True)]
    return {
        "floor": common.median(floor) * us,
        "fenced": common.median(fenced) * us,
        "undying": common.median(total) * us,
        "loop": common.median(loop) * us,
        "ratio": common.median(ratios),
        "ratio_spread": common.spread(ratios),
        "statements": statements,
        "switches": switches,
        "spread": common.spread([t * us for t in total]),
        "floor_spread": common.spread([t * us for t in floor]),
        "samples": {
            "undying": [t * us for t in total],
            "floor": [t * us for t in floor],
            "fenced": [t * us for t in fenced],
            "ratio": ratios,
        },
    }


# -- 2. throughput with worker processes ---------------------------------------------------------
class Workers:
    """N ``undying worker postgres:app`` processes, each ready (banner printed)."""

    def __init__(self, url: str, count: int, concurrency: int | None) -> None:
        env = {**os.environ, "UNDYING_DATABASE_URL": url, "PYTHONUNBUFFERED": "1"}
        if concurrency:
            env["BENCH_PG_WORKER_CONCURRENCY"] = str(concurrency)
        self.procs = [
            subprocess.Popen(
                [common.PYTHON, "-m", "undying", "worker", "postgres:app"],
                cwd=common.BENCH_DIR,
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(count)
        ]
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("undying worker "):
                self.close()
                raise RuntimeError(f"a worker did not start: {line!r}")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


async def _start_runs(url: str, runs: int, in_flight: int = 10) -> tuple[float, float]:
    """Start ``runs`` one-step runs; returns (time.time() before the first, seconds taken)."""
    client = make_app(url, worker=False)
    async with client:
        gate = asyncio.Semaphore(in_flight)

        async def start(i: int) -> None:
            async with gate:
                await client.start(WORKFLOW_ONE, i, run_id=f"r{i:06d}")

        t0 = time.time()
        began = time.perf_counter()
        await asyncio.gather(*(start(i) for i in range(runs)))
        return t0, time.perf_counter() - began


def _wait_all_completed(url: str, runs: int, timeout: float) -> float:
    """Block until every run completed (woken by undying's notifications); returns the
    largest finish stamp."""
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("LISTEN undying")
        while True:
            done, last = conn.execute(
                "SELECT count(*), max(updated_at) FROM runs WHERE status = 'completed'"
            ).fetchone()  # type: ignore[misc]
            bad = conn.execute(
                "SELECT count(*) FROM runs WHERE status IN ('failed', 'cancelled')"
            ).fetchone()[0]  # type: ignore[index]
            if bad:
                raise RuntimeError(f"{bad} runs did not complete")
            if done == runs:
                return float(last)
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done} of {runs} runs completed in {timeout} s")
            for _ in conn.notifies(timeout=0.5, stop_after=1):
                pass


def measure_throughput(
    server: str, workers: int, runs: int, concurrency: int | None
) -> tuple[float, float]:
    """(runs/s end to end, client start rate in runs/s) for one repetition."""
    with fresh_database(server) as url:
        pool = Workers(url, workers, concurrency)
        try:
            t0, start_s = asyncio.run(_start_runs(url, runs))
            last = _wait_all_completed(url, runs, timeout=600)
        finally:
            pool.close()
    return runs / (last - t0), runs / start_s


def measure_drain(server: str, workers: int, runs: int, concurrency: int | None) -> float:
    """runs/s draining a backlog: the workers are started and SIGSTOPped, the client starts
    every run, then all workers are continued at once; from SIGCONT to the last finish."""
    with fresh_database(server) as url:
        pool = Workers(url, workers, concurrency)
        try:
            for proc in pool.procs:
                proc.send_signal(signal.SIGSTOP)
            asyncio.run(_start_runs(url, runs))
            t0 = time.time()
            for proc in pool.procs:
                proc.send_signal(signal.SIGCONT)
            last = _wait_all_completed(url, runs, timeout=600)
        finally:
            for proc in pool.procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGCONT)
            pool.close()
    return runs / (last - t0)


def _rate_figure(
    figures: common.Figures, kind: str, label: str, workers: int, runs: int, rates: list[float]
) -> None:
    figures.add(
        f"{kind}.postgres.workers{workers}",
        label,
        "runs/s",
        rates,
        better="higher",
        backend="postgres",
        workers=workers,
        n=runs,
    )


# -- driver ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions, smaller workloads")
    p.add_argument("--reps", type=int, default=None, help="repetitions per figure (median)")
    p.add_argument("--server", default=SERVER, help="PostgreSQL server URL (admin database)")
    p.add_argument("--part", choices=["steps", "throughput", "both"], default="both")
    p.add_argument("--steps", default=None, help="steps per workflow, a comma list (default 1000)")
    p.add_argument("--runs", type=int, default=None, help="runs per throughput repetition")
    p.add_argument("--workers", default="1,2,4", help="worker process counts, comma list")
    p.add_argument(
        "--worker-concurrency",
        type=int,
        default=None,
        help="runs one worker executes at a time (default: unlimited)",
    )
    p.add_argument(
        "--json",
        default=None,
        metavar="PATH",
        help="also write every figure (median, min, max, samples) to PATH as JSON",
    )
    p.add_argument(
        "--drain-concurrency",
        type=int,
        default=100,
        help="runs one worker executes at a time in the backlog drain (default 100)",
    )
    args = p.parse_args(argv)
    ns = common.sizes(args.steps or ("500" if args.quick else "1000"))
    reps = args.reps or (3 if args.quick else 5)
    runs = args.runs or (1000 if args.quick else 2000)
    counts = [int(c) for c in args.workers.split(",") if c]

    print(common.env_line())
    print(server_line(args.server))
    summary = []
    figures = common.Figures("postgres")
    for n in ns if args.part in ("steps", "both") else []:
        print(f"\nper-step overhead: {n} sequential no-op async steps, median of {reps}")
        r = measure_steps(args.server, n, reps)
        meta = {"backend": "postgres", "step": "noop", "n": n}
        base_id = f"step_overhead.postgres.noop.n{n}"
        samples = r["samples"]
        figures.add(base_id, "undying, async no-op step", "us/step", samples["undying"], **meta)
        figures.add(
            f"{base_id}.floor",
            "floor: psycopg INSERT + COMMIT",
            "us/step",
            samples["floor"],
            **meta,
        )
        figures.add(
            f"{base_id}.fenced",
            "floor-fenced: undying's append_entry",
            "us/step",
            samples["fenced"],
            **meta,
        )
        figures.add(
            f"{base_id}.ratio",
            "undying / floor (paired)",
            "x",
            samples["ratio"],
            target=TARGET_RATIO,
            **meta,
        )
        print(
            common.table(
                "",
                ["", "us/step", "min..max"],
                [
                    ["floor (INSERT + COMMIT, psycopg)", r["floor"], r["floor_spread"]],
                    ["undying (start -> result) / N", r["undying"], r["spread"]],
                    ["undying, loop inside the workflow", r["loop"], ""],
                    ["floor-fenced (undying's append_entry)", r["fenced"], ""],
                ],
            )
        )
        print(
            f"ratio undying / floor: {r['ratio']:.2f}x (paired, min..max {r['ratio_spread']}); "
            f"target <= {TARGET_RATIO}x"
        )
        print(
            f"counted (one more run, not timed): {r['statements']:.3f} statements per step, "
            f"{r['switches']:.3f} switches of server session per step"
        )
        summary.append(
            common.summary_line(
                f"PostgreSQL step overhead, async no-op step, N={n}",
                f"{r['undying']:.1f} us/step = {r['ratio']:.2f}x floor ({r['floor']:.1f} us)",
                f"<= {TARGET_RATIO}x",
                r["ratio"] <= TARGET_RATIO,
            )
        )
    if args.part in ("throughput", "both"):
        limit = args.worker_concurrency or "unlimited"
        print(
            f"\nthroughput: {runs} one-step runs, 1 client + N `undying worker` processes "
            f"(worker concurrency {limit}), median of {reps}"
        )
        rows = []
        base = None
        for count in counts:
            rates, start_rates = [], []
            for _ in range(reps):
                rate, start_rate = measure_throughput(
                    args.server, count, runs, args.worker_concurrency
                )
                rates.append(rate)
                start_rates.append(start_rate)
                print(f"  .. {count} worker(s): {rate:,.0f} runs/s", flush=True)
            rate = statistics.median(rates)
            base = base or rate
            _rate_figure(figures, "throughput", f"{count} worker process(es)", count, runs, rates)
            rows.append(
                [
                    str(count),
                    rate,
                    common.spread(rates),
                    rate / base,
                    statistics.median(start_rates),
                ]
            )
            summary.append(
                common.summary_line(
                    f"PostgreSQL throughput, {count} worker process(es)",
                    f"{rate:,.0f} runs/s",
                    "(curve)",
                    None,
                )
            )
        print(
            common.table(
                "",
                ["workers", "runs/s", "min..max", "x 1 worker", "client starts/s"],
                rows,
            )
        )
        print(f"({os.cpu_count()} CPUs shared by the server, the client and the workers)")

        print(
            f"\nbacklog drain: {runs} one-step runs started while the workers are stopped, "
            f"then the workers continued together (worker concurrency {args.drain_concurrency}),"
            f" median of {reps}"
        )
        rows = []
        base = None
        for count in counts:
            rates = [
                measure_drain(args.server, count, runs, args.drain_concurrency) for _ in range(reps)
            ]
            rate = statistics.median(rates)
            _rate_figure(figures, "drain", f"backlog drain, {count} worker(s)", count, runs, rates)
            print(f"  .. {count} worker(s): {rate:,.0f} runs/s", flush=True)
            base = base or rate
            rows.append([str(count), rate, common.spread(rates), rate / base])
            summary.append(
                common.summary_line(
                    f"PostgreSQL backlog drain, {count} worker process(es)",
                    f"{rate:,.0f} runs/s",
                    "(curve)",
                    None,
                )
            )
        print(common.table("", ["workers", "runs/s", "min..max", "x 1 worker"], rows))
    figures.write(args.json)
    common.emit_summary(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
