"""The epoch fence under a takeover that races a write: an at-most-once step must never run
twice, and a worker that lost its run must never write to its journal again.

1. Real worker processes on PostgreSQL. Worker A's intent INSERT for an at-most-once step is
   held on the server (a test-only trigger sleeps in it) and A is SIGSTOPped; its lease
   expires and worker B takes the run over while that INSERT is still in flight; then A is
   continued. The step's body must run at most once across both processes.
2. The same with real worker processes on SQLite, A frozen (by a test-only hook in its app
   module) just before its intent write.
3. PostgreSQL, store level, for every fenced write: a takeover's transaction is open (the
   epoch bumped and the new owner's intent written, not committed yet) when a zombie's write
   arrives. The write must wait for it and then be refused, leaving nothing behind.
4. PostgreSQL, store level: a claim made while the owner's write holds the run row's lock
   must neither deadlock nor strand the run, and must not let that write land after a
   takeover.

Each PostgreSQL test creates its own database (``pg_helpers.fresh_database``). Nothing sleeps
to synchronise: tests wait for a worker's banner, a process state, a line in a log, or a
condition on the database (``pg_stat_activity`` shows who waits on what), with deadlines.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import fence_worker_app as fapp
import psycopg
import pytest
from pg_helpers import Db, WorkerProcess, fresh_database, poll_until

from undying.codec import Codec
from undying.errors import LeaseLost
from undying.store.base import Entry, NewRun
from undying.store.postgres import PostgresStore

CODEC = Codec()
APP = "fence_worker_app:app"
LEASE_TTL = 1.5
#: how long the test trigger holds an intent INSERT on the server: several leases
INTENT_DELAY = 6.0
ENDED = ("completed", "failed", "cancelled")


def _effects(path: Path) -> list[tuple[int, str, int]]:
    """Every execution of the at-most-once step's body: (pid, run id, journal position)."""
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines()]
    return [(int(pid), rid, int(seq)) for pid, rid, seq in rows]


def _start_run(url: str, batch: bool = False) -> None:
    async def start() -> None:
        async with fapp.make_app(url, worker=False) as client:
            await client.start(fapp.WORKFLOW, batch, run_id="r1")

    asyncio.run(start())


def _wait_for_log(worker: WorkerProcess, text: str, timeout: float) -> None:
    poll_until(
        lambda: text in worker.stderr(),
        timeout,
        lambda: f"{text!r} in worker {worker.index}'s log:\n{worker.stderr()}",
    )


def _stop_gracefully(worker: WorkerProcess) -> None:
    code, _ = worker.terminate_gracefully()
    assert code == 0, f"worker {worker.index} exited {code} on SIGTERM:\n{worker.stderr()}"


def _check_zombie_outcome(
    effects: list[tuple[int, str, int]],
    output: Any,
    a: WorkerProcess,
    b: WorkerProcess,
    journal_before: Any,
    journal_after: Any,
    expect_in_doubt: bool,
) -> None:
    assert len(effects) <= 1, (
        f"the at-most-once step ran {len(effects)} times (pids {[e[0] for e in effects]}; "
        f"worker A is {a.pid}, B is {b.pid})"
    )
    assert "lease lost" in a.stderr(), "worker A should have been told it lost the run"
    assert "lease lost" not in b.stderr(), f"the run's real owner was fenced out:\n{b.stderr()}"
    assert journal_after == journal_before, (
        "the zombie wrote to the journal after it lost the run:\n"
        f"before {journal_before}\nafter  {journal_after}"
    )
    if expect_in_doubt:
        # A's intent committed before B could take the run: B must not run the step again.
        assert output == {"in_doubt": True}, output
        assert [pid for pid, _, _ in effects] in ([], [a.pid])
    else:
        assert output == {"in_doubt": False, "charged_by": b.pid}, output
        assert [pid for pid, _, _ in effects] == [b.pid]


# -- 1. PostgreSQL: A's intent INSERT in flight on the server while B takes the run over -----------
DELAY_INTENT_DDL = f"""
CREATE FUNCTION delay_intent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep({INTENT_DELAY}); RETURN NEW; END $$;
CREATE TRIGGER delay_intent BEFORE INSERT ON journal
    FOR EACH ROW WHEN (NEW.status = 'intent') EXECUTE FUNCTION delay_intent();
"""


@pytest.mark.timeout(120)
def test_postgres_zombie_intent_in_flight_during_takeover(tmp_path: Path) -> None:
    """Worker A's intent INSERT is sleeping in a trigger on the server when A is SIGSTOPped;
    A's lease expires and worker B takes the run over; A is continued after the run ended.

    The run row's lock orders the two: B's takeover cannot commit while A's fenced INSERT
    holds it, so B finds A's intent and gets StepInDoubt. Before the fix the INSERT checked
    the epoch in its own snapshot only: B took over, wrote its own intent over A's (or A
    over B's), and the step ran once in each process."""
    effects = tmp_path / "effects"
    env = {"FENCE_EFFECTS": str(effects), "FENCE_LEASE_TTL": str(LEASE_TTL)}
    with fresh_database() as url:
        db = Db(url)
        a = WorkerProcess(url, tmp_path, 0, env, app=APP)
        b: WorkerProcess | None = None
        try:
            db.execute(DELAY_INTENT_DDL)
            a.wait_ready()
            _start_run(url)

            def intent_in_flight() -> bool:
                return bool(
                    db.count(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event = 'PgSleep'"
                    )
                )

            db.wait(intent_in_flight, 30, "worker A's intent INSERT to sleep in the trigger")
            a.signal(signal.SIGSTOP)
            poll_until(lambda: a.state() == "T", 10, "worker A to stop")
            stopped_at = time.monotonic()
            assert db.value("SELECT epoch FROM runs WHERE run_id = 'r1'") == 1

            b = WorkerProcess(url, tmp_path, 1, env, app=APP)
            b.wait_ready()
            db.wait(
                lambda: db.value("SELECT status FROM runs WHERE run_id = 'r1'") in ENDED,
                60,
                lambda: f"the run to end under worker B:\n{b.stderr() if b else ''}",
            )
            ended_after = time.monotonic() - stopped_at
            run_epoch = db.value("SELECT epoch FROM runs WHERE run_id = 'r1'")
            assert run_epoch >= 2, "worker B should have taken the run over"

            def journal() -> list[tuple[Any, ...]]:
                return db.rows(
                    "SELECT seq, kind, name, status, payload FROM journal "
                    "WHERE run_id = 'r1' ORDER BY seq"
                ) + db.rows("SELECT status, epoch, owner, output FROM runs WHERE run_id = 'r1'")

            before = journal()
            a.signal(signal.SIGCONT)
            _wait_for_log(a, "lease lost", 30)
            _stop_gracefully(a)  # whatever A still had to do is done now
            after = journal()
            status, output = db.rows("SELECT status, output FROM runs WHERE run_id = 'r1'")[0]
            assert status == "completed", status
            _check_zombie_outcome(
                _effects(effects),
                CODEC.decode(bytes(output)),
                a,
                b,
                before,
                after,
                expect_in_doubt=True,
            )
            (step,) = db.rows("SELECT status, payload FROM journal WHERE run_id = 'r1'")
            assert step[0] == "error"
            assert CODEC.decode(bytes(step[1]))["type"] == "undying.errors:StepInDoubt"
            _stop_gracefully(b)
            print(
                f"\nA's intent held {INTENT_DELAY:.0f} s on the server; the run ended "
                f"{ended_after:.1f} s after A stopped (epoch {run_epoch}); the step ran "
                f"{len(_effects(effects))} time(s)"
            )
        finally:
            for worker in (a, b):
                if worker is not None:
                    worker.cleanup()
            db.close()


# -- 2. SQLite: A frozen just before its intent write while B takes the run over -----------------
@pytest.mark.timeout(120)
def test_sqlite_zombie_stopped_before_intent_write(tmp_path: Path) -> None:
    """Worker A stops itself (SIGSTOP) right before writing an at-most-once step's intent;
    its lease expires and worker B takes the run over and starts the step (its intent is
    the run's latest entry, one an intent write may replace); then A is continued. A's
    intent write must be refused (LeaseLost), and the body must run once, in B.

    SQLite needs no row lock for this: every write runs under the database's single write
    lock (an autocommit statement takes it when it starts, ``BEGIN IMMEDIATE`` at BEGIN), and
    in WAL mode a write transaction always reads the newest committed state, so the epoch
    check and the insert it guards cannot straddle a takeover's commit."""
    effects = tmp_path / "effects"
    release_b = tmp_path / "release-b"
    path = str(tmp_path / "undying.db")
    env = {"FENCE_EFFECTS": str(effects), "FENCE_LEASE_TTL": str(LEASE_TTL)}
    a = WorkerProcess(path, tmp_path, 0, {**env, "FENCE_STOP_BEFORE_INTENT": "1"}, app=APP)
    b: WorkerProcess | None = None

    def query(sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(path, timeout=30) as conn:
            return conn.execute(sql).fetchall()

    def journal() -> list[tuple[Any, ...]]:
        return query(
            "SELECT seq, kind, name, status, started_at, payload FROM journal "
            "WHERE run_id = 'r1' ORDER BY seq"
        ) + query("SELECT status, epoch, owner FROM runs WHERE run_id = 'r1'")

    try:
        a.wait_ready()
        _start_run(path)
        poll_until(lambda: a.state() == "T", 30, "worker A to stop before its intent write")
        a.stopped = True
        assert query("SELECT epoch, owner FROM runs WHERE run_id = 'r1'") == [(1, a.worker_id)]
        assert query("SELECT count(*) FROM journal") == [(0,)]

        b = WorkerProcess(path, tmp_path, 1, {**env, "FENCE_HOLD_BODY": str(release_b)}, app=APP)
        b.wait_ready()
        poll_until(
            lambda: _effects(effects),
            60,
            lambda: f"worker B to take the run over and run the step:\n{b.stderr() if b else ''}",
        )
        before = journal()
        assert [row[3] for row in before[:-1]] == ["intent"], before
        a.signal(signal.SIGCONT)
        poll_until(
            lambda: "lease lost" in a.stderr() or len(_effects(effects)) > 1,
            30,
            lambda: f"worker A to be refused:\n{a.stderr()}",
        )
        during = journal()
        release_b.touch()
        poll_until(
            lambda: query("SELECT status FROM runs WHERE run_id = 'r1'")[0][0] in ENDED,
            60,
            lambda: f"the run to end under worker B:\n{b.stderr() if b else ''}",
        )
        _stop_gracefully(a)
        ((status, output),) = query("SELECT status, output FROM runs WHERE run_id = 'r1'")
        assert status == "completed", status
        _check_zombie_outcome(
            _effects(effects), CODEC.decode(output), a, b, before, during, expect_in_doubt=False
        )
        _stop_gracefully(b)
    finally:
        for worker in (a, b):
            if worker is not None:
                worker.cleanup()


# -- 3. PostgreSQL: every fenced write against a takeover in progress ------------------------------
def _intent(seq: int) -> Entry:
    return Entry(seq, "step", "zombie.charge", "intent", None, None, 1, 1.0)


def _done(seq: int) -> Entry:
    return Entry(seq, "step", "zombie.charge", "ok", CODEC.encode("zombie"), None, 1, 1.0, 2.0)


async def _zombie_tx(conn: Any) -> str:
    await conn.execute("INSERT INTO ledger VALUES ('zombie')")
    return "zombie"


FencedWrite = Callable[[PostgresStore], Awaitable[Any]]
FENCED_WRITES: dict[str, FencedWrite] = {
    # the hot path: one entry, one statement
    "append_entry": lambda s: s.write_entries("r1", 1, [_intent(0)], durable=True),
    # a batch of distinct positions: one statement
    "append_entries": lambda s: s.write_entries("r1", 1, [_done(0), _intent(1)]),
    # a batch that rewrites a position (intent, then outcome): entry by entry, one transaction
    "append_rewrite": lambda s: s.write_entries("r1", 1, [_intent(0), _done(0)]),
    "finish_run": lambda s: s.finish_run(
        "r1", 1, "completed", output=CODEC.encode(1), error=None, pending=[_done(0)], now=5.0
    ),
    "finish_run_rewrite": lambda s: s.finish_run(
        "r1", 1, "completed", output=None, error=None, pending=[_intent(0), _done(0)], now=5.0
    ),
    "suspend_run": lambda s: s.suspend_run(
        "r1", 1, wake_at=100.0, wait_events=["go"], pending=[_done(0)], now=5.0
    ),
    "take_event": lambda s: s.take_event("r1", 1, "go", Entry(0, "event", "go", "ok")),
    "continue_as_new": lambda s: s.continue_as_new("r1", 1, CODEC.encode([[2], {}]), 5.0),
    "set_status_value": lambda s: s.set_status_value("r1", 1, CODEC.encode("zombie")),
    "run_transaction": lambda s: s.run_transaction(
        "r1", 1, _zombie_tx, (), lambda result: [_done(0)]
    ),
}

#: the new owner's takeover, held open: what take_over commits, and its replay's first write
TAKEOVER = """
UPDATE runs SET epoch = epoch + 1, owner = 'owner', lease_expires = 1e12, updated_at = 4
WHERE run_id = 'r1';
INSERT INTO journal (run_id, seq, kind, name, status, attempt, started_at)
VALUES ('r1', 0, 'step', 'owner.charge', 'intent', 1, 4);
"""

STATE_QUERIES = (
    "SELECT run_id, status, epoch, owner, input, output, error, lease_expires, wake_at, "
    "wait_events, status_value, generation, updated_at FROM runs ORDER BY run_id",
    "SELECT run_id, seq, kind, name, status, payload FROM journal ORDER BY run_id, seq",
    "SELECT id, run_id, name, consumed_seq FROM events ORDER BY id",
    "SELECT run_id, generation FROM lineage ORDER BY run_id, generation",
    "SELECT who FROM ledger",
)


async def _state(conn: Any) -> list[list[tuple[Any, ...]]]:
    state = []
    for query in STATE_QUERIES:
        cur = await conn.execute(query)
        state.append(await cur.fetchall())
    return state


async def _lock_waiters(watch: Any) -> int:
    cur = await watch.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _cancel_and_close(task: asyncio.Task[Any] | None, *resources: Any) -> None:
    """Cancel ``task`` if it still runs, then close each connection and store."""
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    for resource in resources:
        await resource.close()


async def _until_waiting(watch: Any, task: asyncio.Task[Any], what: str) -> None:
    """Until ``task``'s statement waits on a lock; fails if the task finished first."""
    deadline = time.monotonic() + 20
    while not await _lock_waiters(watch):
        if task.done():
            outcome = task.exception() or task.result()
            pytest.fail(f"{what} went through without waiting: it returned {outcome!r}")
        assert time.monotonic() < deadline, f"{what} never came to wait on a lock"
        await asyncio.sleep(0.02)  # pacing of a poll on database state


@pytest.mark.parametrize("write", sorted(FENCED_WRITES))
def test_postgres_write_during_a_takeover_in_progress_is_refused(write: str) -> None:
    """A zombie's fenced write arrives while the run's takeover is committing (held open here;
    in real life the window between take_over locking the row and its COMMIT). The write
    must wait for the takeover and then be refused with LeaseLost, changing nothing: not the
    new owner's intent (an ON CONFLICT DO UPDATE with a stale epoch once overwrote it), not
    the run, its events, its lineage or the transaction's table."""

    async def body(url: str) -> None:
        zombie = PostgresStore(url)
        gate = await psycopg.AsyncConnection.connect(url, autocommit=True)
        watch = await psycopg.AsyncConnection.connect(url, autocommit=True)
        await zombie.open("zombie")
        task: asyncio.Task[Any] | None = None
        try:
            await gate.execute("CREATE TABLE ledger (who TEXT NOT NULL)")
            _, run = await zombie.create_run(
                NewRun("r1", "wf", CODEC.encode([[1], {}])),
                owner="zombie",
                lease_expires=2.0,
                now=1.0,
            )
            assert run.epoch == 1
            await zombie.send_event("r1", "go", CODEC.encode("payload"), None, 1.5)

            await gate.execute("BEGIN")
            await gate.execute(TAKEOVER)
            expected = await _state(gate)  # what the takeover commits, had the zombie not written
            task = asyncio.ensure_future(FENCED_WRITES[write](zombie))
            await _until_waiting(watch, task, f"the zombie's {write}")
            await gate.execute("COMMIT")
            try:
                outcome = f"succeeded, returning {await asyncio.wait_for(task, 20)!r}"
            except LeaseLost:
                outcome = "refused"
            state = await _state(watch)
            assert outcome == "refused", (
                f"the zombie's {write} {outcome} after the run was taken over; the database "
                f"went from\n{expected} to\n{state}"
            )
            assert state == expected, (
                f"the zombie's refused {write} changed the database:\nexpected {expected}\n"
                f"found    {state}"
            )
        finally:
            await _cancel_and_close(task, gate, watch, zombie)

    with fresh_database() as url:
        asyncio.run(body(url))


# -- 4. PostgreSQL: a claim while the owner's write holds the run row -----------------------------
def test_postgres_claim_while_a_write_is_in_flight() -> None:
    """The owner's intent INSERT is in flight (held on a journal row another session has not
    committed) when another worker, finding the lease expired, claims. The claim must come
    back at once (no deadlock); while the write holds the run row it must not take the run
    over, and once the write committed the next claim must take the run and find the intent.
    (A claim that took the run over mid-write would have to see the write refused; before
    the fix it took the run over and the stale write landed in its journal.)"""

    async def body(url: str) -> None:
        zombie, owner = PostgresStore(url), PostgresStore(url)
        gate = await psycopg.AsyncConnection.connect(url, autocommit=True)
        watch = await psycopg.AsyncConnection.connect(url, autocommit=True)
        await zombie.open("zombie")
        await owner.open("owner")
        task: asyncio.Task[Any] | None = None
        try:
            _, run = await zombie.create_run(
                NewRun("r1", "wf", b"x"), owner="zombie", lease_expires=2.0, now=1.0
            )
            await gate.execute("BEGIN")
            await gate.execute(
                "INSERT INTO journal (run_id, seq, kind, name, status, attempt, started_at) "
                "VALUES ('r1', 0, 'step', 'held', 'intent', 1, 0)"
            )
            task = asyncio.ensure_future(
                zombie.write_entries("r1", run.epoch, [_intent(0)], durable=True)
            )
            await _until_waiting(watch, task, "the owner's intent write")

            def claim() -> Awaitable[Any]:
                return owner.claim(
                    "owner",
                    now=10.0,
                    lease_expires=100.0,
                    limit=10,
                    queues={},
                    running_per_queue={},
                )

            started = time.monotonic()
            during = await asyncio.wait_for(claim(), 10)
            claim_s = time.monotonic() - started
            await gate.execute("ROLLBACK")
            try:
                await asyncio.wait_for(task, 20)
                write_outcome: Any = "written"
            except LeaseLost as exc:
                write_outcome = exc
            after = await asyncio.wait_for(claim(), 10)
            claimed = [c.run.run_id for c in during + after]
            journal = await owner.load_journal_meta("r1")
            assert claimed == ["r1"], f"the run should be claimed exactly once, got {claimed}"
            if during:
                assert isinstance(write_outcome, LeaseLost) and not journal, (
                    f"the run was taken over while its owner's write was in flight, and that "
                    f"write then {write_outcome!r}: the new owner's journal is {journal}"
                )
            else:
                assert write_outcome == "written", write_outcome
                assert [(e.seq, e.status) for e in journal] == [(0, "intent")], journal
            print(f"\nclaim during the write returned {len(during)} run(s) in {claim_s:.3f} s")
        finally:
            await _cancel_and_close(task, gate, watch, zombie, owner)

    with fresh_database() as url:
        asyncio.run(body(url))
