"""Real worker processes on PostgreSQL: SIGKILL, SIGSTOP past the lease, a server restart;
and, in one process, the failures those rely on made deterministic (a zombie frozen before
its COMMIT, a connection cut during a journal write, a full worker with a backlog).

Each test creates its own database on the server at ``$UNDYING_TEST_PG_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``) and drops it afterwards; an unreachable
server fails the tests, it never skips them. The workers run ``pg_worker_app.py`` (ten plain
steps whose effects are rows in an ``effects`` table, then one ``ctx.transaction`` that writes
the run's row in ``completions``); see that module for what is recorded where.

Nothing here sleeps to synchronise: the tests wait for a worker's banner line, or for a
condition on the database, re-checked on every PostgreSQL notification (each finished run
sends one) and at least every 0.2 s, up to a deadline.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pg_worker_app as wapp
import psycopg
import pytest
from pg_helpers import (
    Db,
    WorkerProcess,
    ensure_server_running,
    fresh_database,
    pg_ctlcluster,
    workers,
)

import undying
from undying import App
from undying.codec import Codec
from undying.errors import LeaseLost
from undying.store.base import Entry, NewRun
from undying.store.postgres import PostgresStore

CODEC = Codec()
LEASE_TTL = 2.0
STEP_NAME = "pgw.effect"
TX_NAME = "pg_worker_app:record_completion"


# -- shared by the tests --------------------------------------------------------------------------
def _start_runs(url: str, count: int) -> list[str]:
    """Start ``count`` runs from a client process (this one) that executes nothing."""
    run_ids = [f"run-{n:04d}" for n in range(count)]

    async def start_all() -> None:
        client = wapp.make_app(url, worker=False)
        async with client:
            for n, run_id in enumerate(run_ids):
                await client.start(wapp.WORKFLOW, n, run_id=run_id)

    asyncio.run(start_all())
    return run_ids


def _completed(db: Db) -> int:
    return db.count("SELECT count(*) FROM runs WHERE status = 'completed'")


def _running_by_owner(db: Db) -> Counter[str]:
    rows = db.rows("SELECT owner, count(*) FROM runs WHERE status = 'running' GROUP BY owner")
    return Counter({owner: int(n) for owner, n in rows if owner})


def _running_owned_by(db: Db, procs: list[WorkerProcess]) -> dict[str, int]:
    """run id -> epoch of the runs these workers hold (status running)."""
    rows = db.rows(
        "SELECT run_id, epoch FROM runs WHERE status = 'running' AND owner = ANY(%s)",
        ([w.worker_id for w in procs],),
    )
    return {rid: int(epoch) for rid, epoch in rows}


def _all_completed(db: Db, count: int) -> bool:
    """True once ``count`` runs completed; fails at once if a run ended any other way."""
    ended = db.rows(
        "SELECT run_id, status, error FROM runs "
        "WHERE status IN ('failed', 'cancelled') ORDER BY run_id LIMIT 10"
    )
    if ended:
        listing = "\n".join(
            f"  {rid}: {status}: {CODEC.decode(bytes(error)) if error else None}"
            for rid, status, error in ended
        )
        pytest.fail(f"runs ended without completing:\n{listing}", pytrace=False)
    return _completed(db) == count


def _not_completed(db: Db) -> str:
    rows = db.rows(
        "SELECT run_id, status, owner, epoch, "
        "(SELECT count(*) FROM journal j WHERE j.run_id = r.run_id) "
        "FROM runs r WHERE status <> 'completed' ORDER BY run_id LIMIT 20"
    )
    total = db.count("SELECT count(*) FROM runs WHERE status <> 'completed'")
    listing = "\n".join(
        f"  {rid}: {status}, owner {owner}, epoch {epoch}, {n} journal entries"
        for rid, status, owner, epoch, n in rows
    )
    return f"every run to complete; {total} did not, among them:\n{listing}"


def _check_outcomes(db: Db, run_ids: list[str], *, outage: bool = False) -> dict[str, Any]:
    """Every run completed once with the right result, every step recorded once, no gaps,
    no lost effect; returns figures for the report.

    Without an ``outage`` (a lost connection makes a step or a whole run execute again in
    the same worker), a step runs twice only in a run that changed hands (epoch >= 2)."""
    problems: list[str] = []
    runs = {
        rid: (status, epoch, output)
        for rid, status, epoch, output in db.rows(
            "SELECT run_id, status, epoch, output FROM runs ORDER BY run_id"
        )
    }
    assert sorted(runs) == run_ids, "runs appeared or vanished"

    journal: dict[str, list[tuple[int, str, str, str, Any]]] = defaultdict(list)
    for rid, seq, kind, name, status, payload in db.rows(
        "SELECT run_id, seq, kind, name, status, payload FROM journal ORDER BY run_id, seq"
    ):
        journal[rid].append((seq, kind, name, status, CODEC.decode(bytes(payload))))
    duplicates = db.rows(
        "SELECT run_id, seq, count(*) FROM journal GROUP BY run_id, seq HAVING count(*) > 1"
    )
    assert not duplicates, f"journal positions recorded twice: {duplicates[:10]}"

    effects: dict[tuple[str, int], list[tuple[str, int]]] = defaultdict(list)
    for rid, seq, exec_id, pid in db.rows(
        "SELECT run_id, seq, exec_id, pid FROM effects ORDER BY id"
    ):
        effects[(rid, seq)].append((exec_id, pid))
    completions = Counter(rid for (rid,) in db.rows("SELECT run_id FROM completions"))

    for n, rid in enumerate(run_ids):
        status, epoch, output = runs[rid]
        if status != "completed":
            problems.append(f"{rid}: {status}")
            continue
        result = CODEC.decode(bytes(output))
        entries = journal[rid]
        seqs = [e[0] for e in entries]
        if seqs != list(range(wapp.STEPS + 1)):
            problems.append(f"{rid}: journal positions {seqs}")
            continue
        steps, tx = entries[: wapp.STEPS], entries[wapp.STEPS]
        if any(e[1:4] != ("step", STEP_NAME, "ok") for e in steps) or tx[1:4] != (
            "tx",
            TX_NAME,
            "ok",
        ):
            problems.append(f"{rid}: unexpected journal entries {[e[:4] for e in entries]}")
            continue
        recorded = [e[4]["exec"] for e in steps]
        expected = {"n": n, "total": wapp.expected_total(n), "execs": recorded}
        if result != expected or [e[4]["value"] for e in steps] != [
            wapp.expected_value(n, i) for i in range(wapp.STEPS)
        ]:
            problems.append(f"{rid}: result {result} does not match its journal")
        if tx[4] != wapp.expected_total(n):
            problems.append(f"{rid}: transaction recorded {tx[4]}")
        for seq, exec_id in enumerate(recorded):
            if exec_id not in {e for e, _ in effects[(rid, seq)]}:
                problems.append(f"{rid}:{seq}: journal records an execution that never ran")
        if completions[rid] != 1:
            problems.append(f"{rid}: transaction committed {completions[rid]} times")
        for seq in range(wapp.STEPS):
            runs_of_step = len(effects[(rid, seq)])
            if runs_of_step == 0:
                problems.append(f"{rid}:{seq}: effect lost")
            elif runs_of_step > 1 and epoch < 2 and not outage:
                problems.append(f"{rid}:{seq}: ran {runs_of_step} times in a run claimed once")
    assert not problems, f"{len(problems)} problem(s):\n  " + "\n  ".join(problems[:30])
    executions = sum(len(v) for v in effects.values())
    return {
        "runs": len(run_ids),
        "effects": executions,
        "re_executions": executions - len(run_ids) * wapp.STEPS,
        "taken_over": sum(1 for _, epoch, _ in runs.values() if epoch >= 2),
        "effects_by_pid": Counter(pid for v in effects.values() for _, pid in v),
        "effects_index": effects,
        "journal": journal,
    }


def _stop_gracefully(worker: WorkerProcess) -> None:
    code, out = worker.terminate_gracefully()
    assert code == 0, f"worker {worker.index} exited {code} on SIGTERM:\n{worker.stderr()}"
    assert "shutting down" in out


# -- 1. four workers, two SIGKILLed, one SIGSTOPped past its lease ------------------------------
RUNS = 500


@pytest.mark.timeout(300)
def test_four_workers_kills_and_a_stop(tmp_path: Path) -> None:
    """4 worker processes, 500 runs of 10 steps, 2 workers SIGKILLed mid-way and 1 SIGSTOPped
    past its lease: every run completes once, no step is recorded twice."""
    env = {"PGW_LEASE_TTL": str(LEASE_TTL), "PGW_MAX_RUNS": "20"}
    started = time.monotonic()
    with fresh_database() as url:
        db = Db(url)
        try:
            db.execute(wapp.EFFECTS_DDL)
            with workers(url, tmp_path, 4, env) as procs:
                run_ids = _start_runs(url, RUNS)

                # -- two SIGKILLs once a tenth of the runs completed -------------------------
                db.wait(lambda: _completed(db) >= RUNS // 10, 120, "a tenth of the runs")
                owning = _running_by_owner(db)
                victims = sorted(procs, key=lambda w: owning[w.worker_id], reverse=True)[:2]
                assert all(owning[v.worker_id] for v in victims), (
                    f"each worker to kill should hold runs in progress: {owning}"
                )
                orphaned = sum(owning[v.worker_id] for v in victims)
                for victim in victims:
                    victim.signal(signal.SIGKILL)
                for victim in victims:
                    assert victim.proc.wait(30) == -signal.SIGKILL
                completed_at_kill = _completed(db)
                # A dead worker's lock is free: its runs are taken over without waiting for
                # their leases to expire.
                kill_done = time.monotonic()
                db.wait(
                    lambda: not _running_owned_by(db, victims),
                    60,
                    "the killed workers' runs to be taken over",
                )
                dead_takeover_s = time.monotonic() - kill_done

                # -- one SIGSTOP, past the lease, once 30% completed ---------------------------
                db.wait(lambda: _completed(db) >= RUNS * 3 // 10, 120, "30% of the runs")
                survivors = [w for w in procs if w not in victims]
                owning = _running_by_owner(db)
                stopped = max(survivors, key=lambda w: owning[w.worker_id])
                (last,) = [w for w in survivors if w is not stopped]
                stopped.signal(signal.SIGSTOP)
                db.wait(lambda: stopped.state() == "T", 10, "the worker to stop")
                stop_time = time.monotonic()
                held = _running_owned_by(db, [stopped])
                assert held, "the stopped worker should have held runs in progress"
                # It is alive (its session holds its lock), so only the expiry of its leases
                # lets the last worker take its runs over; wait for every one of them.
                db.wait(
                    lambda: not _running_owned_by(db, [stopped]),
                    60,
                    "the stopped worker's runs to be taken over",
                )
                stopped_for = time.monotonic() - stop_time
                epochs = dict(
                    db.rows("SELECT run_id, epoch FROM runs WHERE run_id = ANY(%s)", (list(held),))
                )
                lost = {rid for rid, epoch in epochs.items() if epoch > held[rid]}
                assert lost, "no run of the stopped worker was taken over"
                cutoff = db.count("SELECT coalesce(max(id), 0) FROM effects")
                completed_at_cont = _completed(db)
                stopped.signal(signal.SIGCONT)

                # -- everything completes; the two living workers shut down cleanly -----------
                db.wait(lambda: _all_completed(db, RUNS), 180, lambda: _not_completed(db))
                for worker in (stopped, last):
                    assert worker.proc.poll() is None, f"worker {worker.index} died"
                    _stop_gracefully(worker)
                stopped_log = stopped.stderr()

            report = _check_outcomes(db, run_ids)

            # -- the zombie: after SIGCONT it ran at most its in-flight step of each lost run,
            # and none of what it did after the takeover reached the journal ----------------
            late = db.rows(
                "SELECT run_id, seq, exec_id FROM effects WHERE pid = %s AND id > %s "
                "AND run_id = ANY(%s)",
                (stopped.pid, cutoff, list(lost)),
            )
            late_per_run = Counter(rid for rid, _, _ in late)
            assert all(n <= 1 for n in late_per_run.values()), (
                f"the resumed zombie ran several steps of a run it had lost: {late_per_run}"
            )
            # Its late writes were refused: by the epoch fence (LeaseLost), or, for a worker
            # frozen inside ctx.transaction, by the server ending its idle-in-transaction
            # session (which is what lets the run be taken over at all). What matters most is
            # checked next: none of them reached the journal.
            # The server's goodbye is not always read before the socket closes: psycopg then
            # reports the ended session as "server closed the connection".
            refusals = sum(
                stopped_log.count(sign)
                for sign in ("lease lost", "idle-in-transaction", "server closed the connection")
            )
            assert not late_per_run or refusals, (
                "the zombie's writes after the takeover should have been refused:\n" + stopped_log
            )
            journal = report["journal"]
            for rid, seq, exec_id in late:
                recorded = journal[rid][seq][4]["exec"]
                assert recorded != exec_id, (
                    f"{rid}:{seq}: the zombie's late execution reached the journal"
                )
            by_victims = sum(report["effects_by_pid"][v.pid] for v in victims)
            print(
                f"\n{RUNS} runs x {wapp.STEPS} steps on 4 workers in "
                f"{time.monotonic() - started:.1f} s: 2 SIGKILLed at {completed_at_kill} "
                f"completed (holding {orphaned} runs, taken over in "
                f"{dead_takeover_s:.2f} s), 1 SIGSTOPped holding {len(held)} runs for "
                f"{stopped_for:.2f} s (lease {LEASE_TTL} s; {len(lost)} taken over; "
                f"SIGCONT at {completed_at_cont} completed); effects {report['effects']} "
                f"(re-executions {report['re_executions']}, killed workers ran "
                f"{by_victims}); runs taken over {report['taken_over']}; zombie ran "
                f"{len(late)} late step(s), all refused; its log has "
                f"{stopped_log.count('lease lost')} 'lease lost' lines"
            )
        finally:
            db.close()


# -- 2. the PostgreSQL server restarts under a working worker -------------------------------------
RESTART_RUNS = 400


@pytest.mark.timeout(300)
def test_postgres_restart_mid_run(tmp_path: Path) -> None:
    """A worker process rides out a restart of the PostgreSQL server in the middle of its
    runs: it reconnects, and every run completes with its journal complete."""
    env = {"PGW_LEASE_TTL": "10", "PGW_MAX_RUNS": "100"}
    with fresh_database() as url:
        db = Db(url)
        try:
            db.execute(wapp.EFFECTS_DDL)
            with workers(url, tmp_path, 1, env) as (worker,):
                run_ids = _start_runs(url, RESTART_RUNS)
                db.wait(lambda: _completed(db) >= 10, 120, "the first runs to complete")
                in_flight = db.count("SELECT count(*) FROM runs WHERE status = 'running'")
                db.close()
                try:
                    restart = pg_ctlcluster("restart")
                    assert restart.returncode == 0, restart.stdout + restart.stderr
                finally:
                    ensure_server_running()
                db.wait(lambda: _all_completed(db, RESTART_RUNS), 180, lambda: _not_completed(db))
                assert worker.proc.poll() is None, "the worker died"
                _stop_gracefully(worker)
            report = _check_outcomes(db, run_ids, outage=True)
            print(
                f"\nrestart with {in_flight} runs in flight: {RESTART_RUNS} runs completed, "
                f"{report['effects']} effects ({report['re_executions']} re-executions)"
            )
        finally:
            db.close()


# -- 3. a zombie frozen between its transaction's journal write and its COMMIT -------------------
HOLD_COMMIT_DDL = """
CREATE TABLE ledger (run_id TEXT NOT NULL, who TEXT NOT NULL);
-- Commit-time trigger: a 'zombie' row makes its transaction wait at COMMIT for advisory lock
-- 4242, which the test holds: the zombie is frozen after its last statement (the fenced
-- journal append went through) and before its commit, as a SIGSTOP or GC pause there would.
CREATE FUNCTION hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER hold_commit AFTER INSERT ON ledger DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.who = 'zombie') EXECUTE FUNCTION hold_commit();
"""


def test_zombie_transaction_is_fenced_at_commit() -> None:
    """``ctx.transaction`` is exactly once only if a worker that lost its run cannot commit
    the transaction's effect, and the run's new owner is not turned away by it.

    Store level, two stores standing for two workers. The zombie's ``run_transaction`` has
    passed the epoch fence (its INSERT ... SELECT FROM runs WHERE epoch = 1) and is frozen
    before COMMIT; its lease expires and the other worker claims the run (epoch 2) and
    replays it, running the transaction itself. Either the takeover must wait for the frozen
    transaction (a lock on the run row), or the zombie's COMMIT must fail with LeaseLost and
    the new owner's transaction must succeed. Never may the new owner get LeaseLost for a run
    it holds: the worker drops the run and keeps heartbeating its lease, so it never ends.
    """

    def entries(who: str) -> Any:
        return lambda result: [Entry(0, "tx", "ledger", "ok", CODEC.encode(who), None, 1, 1.0, 1.0)]

    async def write(conn: Any, who: str) -> str:
        await conn.execute("INSERT INTO ledger VALUES ('r1', %s)", (who,))
        return who

    async def waiting_on(gate: Any, event: str, deadline: float) -> None:
        """Until some session of this database waits on a lock of type ``event``."""
        while True:
            cur = await gate.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND wait_event = %s",
                (event,),
            )
            row = await cur.fetchone()
            if row and row[0]:
                return
            assert time.monotonic() < deadline, f"no session came to wait on a {event} lock"
            await asyncio.sleep(0.02)  # pacing of a poll on database state

    async def body(url: str) -> None:
        zombie, owner = PostgresStore(url), PostgresStore(url)
        gate = await psycopg.AsyncConnection.connect(url, autocommit=True)
        await zombie.open("zombie")
        await owner.open("owner")
        tasks: list[asyncio.Task[Any]] = []
        try:
            await gate.execute(HOLD_COMMIT_DDL)
            await gate.execute("SELECT pg_advisory_lock(4242)")
            now = time.time()
            _, run = await zombie.create_run(
                NewRun("r1", "wf", b"x"), owner="zombie", lease_expires=now + 2, now=now
            )
            z = asyncio.ensure_future(
                zombie.run_transaction("r1", run.epoch, write, ("zombie",), entries("zombie"))
            )
            tasks.append(z)
            deadline = time.monotonic() + 20
            await waiting_on(gate, "advisory", deadline)  # frozen at COMMIT

            # Its lease is long gone (now + 10): the other worker claims the run.
            claims = await owner.claim(
                "owner",
                now=now + 10,
                lease_expires=now + 100,
                limit=10,
                queues={},
                running_per_queue={},
            )
            if not claims:  # the takeover waits for the frozen transaction: fine
                await gate.execute("SELECT pg_advisory_unlock(4242)")
                assert await z == "zombie"
                return
            (claim,) = claims
            o = asyncio.ensure_future(
                owner.run_transaction("r1", claim.run.epoch, write, ("owner",), entries("owner"))
            )
            tasks.append(o)
            await waiting_on(gate, "transactionid", deadline)  # on the zombie's journal row
            await gate.execute("SELECT pg_advisory_unlock(4242)")
            zombie_outcome, owner_outcome = await asyncio.gather(z, o, return_exceptions=True)
            cur = await gate.execute("SELECT who FROM ledger")
            ledger = [r[0] for r in await cur.fetchall()]
            assert isinstance(zombie_outcome, LeaseLost) and owner_outcome == "owner", (
                f"after the takeover the zombie's transaction returned {zombie_outcome!r} "
                f"(committed: ledger {ledger}), and the run's owner got {owner_outcome!r}"
            )
            assert ledger == ["owner"]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await gate.close()
            await zombie.close()
            await owner.close()

    with fresh_database() as url:
        asyncio.run(body(url))


# -- 4. a connection lost in the middle of a journal write -----------------------------------------
@undying.step(name="pgw.answer")
async def answer() -> int:
    return 42


async def ledger_write(conn: Any) -> int:
    await conn.execute("CREATE TABLE IF NOT EXISTS ledger (n INTEGER)")
    await conn.execute("INSERT INTO ledger VALUES (42)")
    return 42


@pytest.mark.parametrize(
    "write",
    [
        "step result",
        "finish",
        "transaction",
    ],
)
def test_connection_lost_during_a_journal_write_does_not_fail_the_run(write: str) -> None:
    """What a server restart does to a write in flight, made deterministic: a journal write
    (a step's result, the run's finish with its last recorded value, or a ``ctx.transaction``
    with its entry) is held on a row lock, then its backend is terminated, as a restart
    terminates every backend (SQLSTATE 57P01). The run must neither fail for it nor be left
    behind: the worker reconnects and the run completes (a step may run again: its write
    either committed or did not)."""

    async def body(url: str) -> None:
        app = App(url, lease_ttl=5.0)

        @app.workflow(name="pgw.answer_wf")
        async def answer_wf(ctx: Any) -> int:
            if write == "finish":
                ctx.now()  # recorded at position 0, written with the finish
                return 42
            if write == "transaction":
                return await ctx.transaction(ledger_write)  # its entry is position 0
            return await answer()  # its result is written at position 0

        gate = await psycopg.AsyncConnection.connect(url, autocommit=True)
        # Another session watches: inside the gate's transaction pg_stat_activity is a
        # snapshot that would never change.
        watch = await psycopg.AsyncConnection.connect(url, autocommit=True)
        try:
            # Hold journal position (r1, 0): the worker's INSERT of it waits for this
            # transaction (a unique-key conflict with a row not committed yet).
            await gate.execute("BEGIN")
            await gate.execute(
                "INSERT INTO journal (run_id, seq, kind, name, status, attempt, started_at) "
                "VALUES ('r1', 0, 'step', 'held', 'intent', 1, 0)"
            )
            async with app:
                handle = await app.start(answer_wf, run_id="r1")
                deadline = time.monotonic() + 20
                while True:
                    cur = await watch.execute(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock'"
                    )
                    blocked = [row[0] for row in await cur.fetchall()]
                    if blocked:
                        break
                    assert time.monotonic() < deadline, "the journal write never blocked"
                    await asyncio.sleep(0.02)  # pacing of a poll on database state
                # A restart in miniature: the backend of the write in flight is terminated.
                await watch.execute("SELECT pg_terminate_backend(%s)", (blocked[0],))
                await gate.execute("ROLLBACK")
                try:
                    result = await handle.result(timeout=10)
                except Exception as exc:
                    run = await app.store.get_run("r1")
                    state = f"{run.status}, owner {run.owner}" if run else "gone"
                    pytest.fail(
                        f"{type(exc).__name__}: {exc} (the run is {state}); a connection lost "
                        f"during the {write} write must not end or strand the run",
                        pytrace=False,
                    )
                assert result == 42
        finally:
            await gate.close()
            await watch.close()

    with fresh_database() as url:
        asyncio.run(body(url))


# -- 5. a worker at its concurrency limit claims more as soon as a run ends -----------------------
def test_a_full_worker_claims_the_backlog_without_waiting_for_its_poll() -> None:
    """A backlog of 10 runs, one worker that executes 2 at a time and polls every 60 s: when
    a run ends a slot is free, and the worker must claim the next pending run at once (it
    hears no notification of its own writes, so only its own finish can tell it)."""

    async def body(url: str) -> None:
        client = App(url, worker=False)
        worker = App(url, max_concurrent_runs=2, poll_interval=60.0)
        for app in (client, worker):
            app.workflow(name="pgw.answer_wf")(_answer_wf)
        async with client:
            # The backlog exists before the worker starts: nobody notifies it afterwards.
            handles = [await client.start(_answer_wf, run_id=f"b{i}") for i in range(10)]
            async with worker:
                try:
                    results = await asyncio.wait_for(
                        asyncio.gather(*(h.result() for h in handles)), timeout=10
                    )
                except TimeoutError:
                    done = [h.run_id for h in handles if await h.status() == "completed"]
                    pytest.fail(
                        f"after 10 s only {len(done)} of 10 runs completed: the worker waits "
                        "for its next poll (60 s) to claim more",
                        pytrace=False,
                    )
            assert results == [42] * 10

    with fresh_database() as url:
        asyncio.run(body(url))


async def _answer_wf(ctx: Any) -> int:
    return await answer()
