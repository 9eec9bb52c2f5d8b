"""Crash torture: worker processes on a mixed workload, SIGKILLed at random moments.

    python bench/torture.py --kills 1000 --seed 7

Runs are created up front by a client ``App(path, worker=False)``, ``--runs`` at a time: while
kills remain and fewer than half of the created runs are unfinished, another batch is
created, so kills keep landing on busy workers however fast the machine is. ``--workers``
worker processes (``torture_worker.py``) share one SQLite journal; the harness SIGKILLs one of
them at a random moment (a seeded random interval, the *kill schedule*), restarts it at once,
and repeats until ``--kills`` kills were delivered. Then it lets every run finish, executes
the same inputs again in an uncrashed reference run, and checks:

* every run completed, with the reference run's result (recorded now/random values are
  checked against the journal instead; an at-most-once step may be ``StepInDoubt``);
* keyed effects: exactly one row per (run, step), all executions under one idempotency key;
* transactional effects: exactly one row per (run, step) (committed with the journal entry);
* at-most-once steps: the body started at most once; a step whose result was recorded did
  its effect exactly once; a step in doubt surfaced as ``StepInDoubt`` (effect done or not);
* the journal of every run is 0..n-1, no gaps, no duplicates, no open entry left, and no
  completed entry observed during the torture (snapshots are taken every second) was ever
  rewritten.

The seed fixes the workload (every run's plan) and the kill schedule; process timing is the
one thing a replay with the same seed cannot fix.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torture_worker as workload

from undying.codec import Codec

WORKER_SCRIPT = Path(workload.__file__).resolve()
TERMINAL = ("completed", "failed", "cancelled")
MAX_PROBLEMS = 50


@dataclass
class RunSpec:
    run_id: str
    run_no: int
    plan: list[list[Any]]


def make_specs(seed: int, steps: int, *, start: int, count: int) -> list[RunSpec]:
    """Runs ``start .. start+count-1`` of the workload of ``seed``."""
    return [
        RunSpec(workload.run_id_for(n), n, workload.plan_for(seed, n, steps))
        for n in range(start, start + count)
    ]


@dataclass
class WorkerSlot:
    """One worker position: the process currently filling it, and its history."""

    index: int
    logdir: Path
    proc: subprocess.Popen[bytes] | None = None
    incarnation: int = 0
    out_path: Path | None = None
    err_path: Path | None = None
    logs: list[Path] = field(default_factory=list)

    def start(
        self, journal: Path, effects: Path, stop_file: Path, concurrency: int, tx_work: float
    ) -> None:
        self.incarnation += 1
        stem = f"w{self.index}-{self.incarnation:04d}"
        self.out_path = self.logdir / f"{stem}.out"
        self.err_path = self.logdir / f"{stem}.err"
        self.logs.append(self.err_path)
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(WORKER_SCRIPT),
                    str(journal),
                    str(effects),
                    str(stop_file),
                    "--concurrency",
                    str(concurrency),
                    "--tx-work",
                    str(tx_work),
                ],
                stdout=out,
                stderr=err,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        """Whether this incarnation finished its start-up recovery (it printed ``ready``)."""
        return self.out_path is not None and self.out_path.stat().st_size > 0

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


class Pool:
    """The worker processes of one database."""

    def __init__(
        self,
        journal: Path,
        effects: Path,
        workdir: Path,
        workers: int,
        concurrency: int,
        tx_work: float = 0.0,
    ) -> None:
        self.journal, self.effects = journal, effects
        self.tx_work = tx_work
        self.stop_file = workdir / "stop"
        self.concurrency = concurrency
        logdir = workdir / "logs"
        logdir.mkdir(exist_ok=True)
        self.slots = [WorkerSlot(i, logdir) for i in range(workers)]
        self.unexpected_exits: list[str] = []

    def start_all(self) -> None:
        for slot in self.slots:
            self.restart(slot)

    def restart(self, slot: WorkerSlot) -> None:
        slot.start(self.journal, self.effects, self.stop_file, self.concurrency, self.tx_work)

    def revive(self) -> None:
        """Restart workers that exited without being killed (and remember why)."""
        for slot in self.slots:
            if slot.proc is not None and not slot.alive():
                assert slot.err_path is not None
                tail = slot.err_path.read_text(errors="replace")[-2000:]
                self.unexpected_exits.append(
                    f"worker {slot.index}#{slot.incarnation} exited with "
                    f"{slot.proc.returncode}: {tail}"
                )
                self.restart(slot)

    def stop(self, timeout: float = 30.0) -> None:
        """Ask every worker to stop, wait for it; kill what does not stop in time."""
        self.stop_file.touch()
        deadline = time.monotonic() + timeout
        for slot in self.slots:
            if slot.proc is None:
                continue
            try:
                slot.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.unexpected_exits.append(f"worker {slot.index} did not stop; killed")
                slot.kill()
            else:
                if slot.proc.returncode != 0:
                    assert slot.err_path is not None
                    tail = slot.err_path.read_text(errors="replace")[-2000:]
                    self.unexpected_exits.append(
                        f"worker {slot.index} stopped with {slot.proc.returncode}: {tail}"
                    )

    def kill_all(self) -> None:
        for slot in self.slots:
            if slot.alive():
                slot.kill()

    def log_warnings(self) -> Counter[str]:
        """Lines the workers logged, by kind (ERROR lines and tracebacks are problems)."""
        kinds: Counter[str] = Counter()
        for slot in self.slots:
            for path in slot.logs:
                with contextlib.suppress(FileNotFoundError):
                    for line in path.read_text(errors="replace").splitlines():
                        if line.startswith(("WARNING", "ERROR", "CRITICAL", "Traceback")):
                            kinds[line.split(":", 1)[0].split(" pid=")[0] + ": " + _gist(line)] += 1
        return kinds


def _gist(line: str) -> str:
    message = line.split(": ", 1)[-1]
    return message[:80]


# -- database helpers ------------------------------------------------------------------------
def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    conn.execute("PRAGMA busy_timeout=60000")
    return conn


def prepare(journal: Path, effects: Path) -> None:
    """Create the journal schema (through the library) and the effect tables."""

    async def migrate() -> None:
        async with workload.build_app(str(journal), worker=False):
            pass

    asyncio.run(migrate())
    conn = _connect(journal)
    conn.executescript(workload.JOURNAL_EFFECTS_SCHEMA)
    conn.close()
    workload.create_effects_schema(str(effects))


def create_runs(journal: Path, specs: list[RunSpec]) -> None:
    async def main() -> None:
        async with workload.build_app(str(journal), worker=False) as app:
            for spec in specs:
                await app.start("torture", spec.run_no, spec.plan, run_id=spec.run_id)

    asyncio.run(main())


def unfinished(conn: sqlite3.Connection) -> int:
    marks = ",".join("?" * len(TERMINAL))
    sql = f"SELECT count(*) FROM runs WHERE status NOT IN ({marks})"
    return int(conn.execute(sql, TERMINAL).fetchone()[0])


class JournalWatch:
    """Snapshots of completed journal entries; any later change of one is a rewrite.

    A periodic snapshot reads the entries of runs still in flight (and of runs that changed
    since the previous snapshot), which keeps its cost bounded on long tortures; the final
    snapshot (``full=True``) reads every entry."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[int, bytes]] = {}
        self.rewritten: list[str] = []
        self._reported: set[tuple[str, int]] = set()
        self._since = 0.0
        self.snapshots = 0

    def snapshot(self, conn: sqlite3.Connection, *, full: bool = False) -> None:
        self.snapshots += 1
        marks = ",".join("?" * len(TERMINAL))
        since, self._since = self._since, time.time() - 5.0  # margin: commits in flight
        scope_sql = (
            "SELECT run_id FROM runs"
            if full
            else f"SELECT run_id FROM runs WHERE status NOT IN ({marks}) OR updated_at >= ?"
        )
        params: tuple[Any, ...] = () if full else (*TERMINAL, since)
        with contextlib.closing(conn.cursor()) as cur:
            cur.execute("BEGIN")  # one read transaction: the scope and its entries agree
            try:
                scope = {row[0] for row in cur.execute(scope_sql, params)}
                current: dict[str, dict[int, bytes]] = defaultdict(dict)
                rows = cur.execute(
                    "SELECT run_id, seq, kind, name, status, digest, payload FROM journal "
                    f"WHERE status IN ('ok', 'error') AND run_id IN ({scope_sql})",
                    params,
                )
                for run_id, seq, kind, name, status, digest, payload in rows:
                    h = hashlib.blake2b(digest_size=16)
                    for part in (kind, name, status):
                        h.update(part.encode() + b"\0")
                    h.update((digest or b"") + b"\0" + (payload or b""))
                    current[run_id][seq] = h.digest()
            finally:
                cur.execute("COMMIT")
        for run_id in scope:
            old_entries = self.seen.get(run_id, {})
            new_entries = current.get(run_id, {})
            for seq, old in old_entries.items():
                new = new_entries.get(seq)
                if new != old and (run_id, seq) not in self._reported:
                    self._reported.add((run_id, seq))
                    what = "deleted" if new is None else "rewritten"
                    self.rewritten.append(f"journal entry ({run_id}, {seq}) was {what}")
            for seq, new in new_entries.items():
                old_entries.setdefault(seq, new)
            if old_entries:
                self.seen[run_id] = old_entries


# -- phases ----------------------------------------------------------------------------------
def wait_until_done(
    conn: sqlite3.Connection, pool: Pool | None, timeout: float, watch: JournalWatch | None
) -> bool:
    deadline = time.monotonic() + timeout
    last_snapshot = time.monotonic()
    while unfinished(conn):
        if time.monotonic() > deadline:
            return False
        if pool is not None:
            pool.revive()
        if watch is not None and time.monotonic() - last_snapshot > 1.0:
            watch.snapshot(conn)
            last_snapshot = time.monotonic()
        time.sleep(0.05)  # polling the database with a deadline
    return True


def reference_outputs(
    workdir: Path, specs: list[RunSpec], timeout: float
) -> dict[str, dict[str, Any]]:
    """Execute every input once more, on a fresh database, with nobody killed."""
    workdir.mkdir(parents=True, exist_ok=True)
    journal, effects = workdir / "journal.db", workdir / "effects.db"
    prepare(journal, effects)
    create_runs(journal, specs)
    processes = 2  # uses both cores of a small CI machine; each takes half of the runs
    pool = Pool(journal, effects, workdir, processes, concurrency=len(specs) // processes + 1)
    conn = _connect(journal)
    try:
        pool.start_all()
        if not wait_until_done(conn, pool, timeout, None):
            raise RuntimeError(f"the reference run did not finish within {timeout} s")
        pool.stop()
        if pool.unexpected_exits:
            raise RuntimeError(f"the reference worker failed: {pool.unexpected_exits}")
        return read_outputs(conn)
    finally:
        pool.kill_all()
        conn.close()


def read_outputs(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """The results of a database's runs, which must all have completed."""
    codec = Codec()
    out: dict[str, dict[str, Any]] = {}
    for run_id, status, output in conn.execute("SELECT run_id, status, output FROM runs"):
        if status != "completed":
            raise RuntimeError(f"reference run {run_id} ended {status}")
        out[run_id] = codec.decode(output)
    return out


@dataclass
class Tally:
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def problem(self, counter: str, message: str) -> None:
        self.counts[counter] += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(message)


def check(
    journal: Path, effects: Path, specs: list[RunSpec], reference: dict[str, dict[str, Any]]
) -> Tally:
    """Compare what the torture left with what an uncrashed execution must leave."""
    t = Tally()
    codec = Codec()
    jconn, econn = _connect(journal), _connect(effects)
    try:
        runs = {
            r[0]: r[1:] for r in jconn.execute("SELECT run_id, status, output, error FROM runs")
        }
        entries: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        for row in jconn.execute(
            "SELECT run_id, seq, kind, name, status, payload FROM journal ORDER BY run_id, seq"
        ):
            entries[row[0]].append(row[1:])

        def grouped(conn: sqlite3.Connection, sql: str) -> dict[tuple[str, int], list[Any]]:
            out: dict[tuple[str, int], list[Any]] = defaultdict(list)
            for run_id, k, *rest in conn.execute(sql):
                out[(run_id, k)].append(rest)
            return out

        tx_rows = grouped(jconn, "SELECT run_id, k, value FROM tx_effects")
        keyed_rows = grouped(econn, "SELECT run_id, k, key, value FROM keyed")
        keyed_attempts = grouped(econn, "SELECT run_id, k, key FROM keyed_attempts")
        tx_attempts = grouped(econn, "SELECT run_id, k, pid FROM tx_attempts")
        amo_started = grouped(econn, "SELECT run_id, k, key FROM amo_started")
        amo_effects = grouped(econn, "SELECT run_id, k, key, value FROM amo_effects")
    finally:
        jconn.close()
        econn.close()

    expected_cells: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for spec in specs:
        for k, (kind, _) in enumerate(spec.plan):
            expected_cells[kind].add((spec.run_id, k))
    # Rows for a (run, step) that is not such an operation at all: an effect from nowhere.
    for kind, rows in (
        ("tx", tx_rows),
        ("keyed", keyed_rows),
        ("keyed", keyed_attempts),
        ("tx", tx_attempts),
        ("amo", amo_started),
        ("amo", amo_effects),
    ):
        for cell in rows:
            if cell not in expected_cells[kind]:
                t.problem("effects_duplicated", f"{kind} effect for {cell}, not a {kind} step")

    for spec in specs:
        rid = spec.run_id
        t.counts["runs"] += 1
        status, output, error = runs.get(rid, ("missing", None, None))
        if status != "completed":
            detail = codec.decode(error) if error else None
            t.problem("runs_not_completed", f"run {rid} is {status}: {detail}")
            continue
        t.counts["completed"] += 1
        result = codec.decode(output)
        ref = reference[rid]
        pure = workload.expected_result(spec.run_no, spec.plan)
        masked = [None if p is None else r for r, p in zip(ref["ops"], pure["ops"], strict=True)]
        if masked != pure["ops"] or ref["acc"] != pure["acc"]:
            t.problem("reference_mismatch", f"reference run {rid} differs from the pure model")
        journal_rows = entries.get(rid, [])
        seqs = [row[0] for row in journal_rows]
        if seqs != list(range(len(spec.plan))):
            t.problem("journal_problems", f"run {rid}: journal seqs {seqs}")
            continue
        if result["run"] != ref["run"] or result["acc"] != ref["acc"]:
            t.problem("result_mismatches", f"run {rid}: result {result} != reference {ref}")
        for k, (kind, _) in enumerate(spec.plan):
            cell = (rid, k)
            key = f"{rid}:{k}"
            _, jkind, jname, jstatus, payload = journal_rows[k]
            got, want = result["ops"][k], ref["ops"][k]
            if (jkind, jname) != workload.JOURNAL_SHAPE[kind]:
                t.problem("journal_problems", f"{cell}: journal holds {jkind} {jname} for {kind}")
            if jstatus not in ("ok", "error") or (jstatus == "error" and kind != "amo"):
                t.problem("journal_problems", f"{cell}: journal entry status {jstatus}")
            if kind in ("keyed", "tx", "sleep") and got != want:
                t.problem("result_mismatches", f"{cell}: {kind} gave {got!r}, reference {want!r}")
            if kind in ("now", "random"):
                recorded = codec.decode(payload) if payload is not None else None
                if kind == "now" and recorded is not None:
                    recorded = recorded.isoformat()
                if got != recorded:
                    t.problem(
                        "result_mismatches", f"{cell}: {kind} {got!r} but journal has {recorded!r}"
                    )
            if kind == "keyed":
                rows = keyed_rows.get(cell, [])
                tries = keyed_attempts.get(cell, [])
                if not rows:
                    t.problem("effects_lost", f"{cell}: keyed effect missing")
                elif len(rows) > 1:
                    t.counts["effects_duplicated"] += len(rows) - 1
                    t.problem("keyed_duplicates", f"{cell}: keyed effect {len(rows)} times: {rows}")
                elif rows[0] != [key, got]:
                    t.problem("result_mismatches", f"{cell}: keyed row {rows[0]} != {[key, got]}")
                if any(r[0] != key for r in tries):
                    t.problem("unstable_keys", f"{cell}: attempts under keys {tries}")
                if len(tries) > 1:
                    t.counts["keyed_reexecuted"] += 1
            elif kind == "tx":
                rows = tx_rows.get(cell, [])
                if not rows:
                    t.problem("effects_lost", f"{cell}: transactional effect missing")
                elif len(rows) > 1:
                    t.counts["effects_duplicated"] += len(rows) - 1
                    t.problem("tx_duplicates", f"{cell}: transactional effect {len(rows)} times")
                elif rows[0] != [got]:
                    t.problem("result_mismatches", f"{cell}: tx row {rows[0]} != {got}")
                if len(tx_attempts.get(cell, [])) > 1:
                    t.counts["tx_reexecuted"] += 1  # rolled back by a kill, then run again
            elif kind == "amo":
                started = amo_started.get(cell, [])
                done = amo_effects.get(cell, [])
                if len(started) > 1:
                    t.problem(
                        "amo_executed_twice", f"{cell}: at-most-once body ran {len(started)}x"
                    )
                if len(done) > 1:
                    t.counts["effects_duplicated"] += len(done) - 1
                    t.problem("amo_duplicates", f"{cell}: at-most-once effect {len(done)} times")
                if isinstance(got, dict) and "in_doubt" in got:
                    t.counts["in_doubt"] += 1
                    t.counts["in_doubt_with_effect" if done else "in_doubt_without_effect"] += 1
                    if got != {"in_doubt": key}:
                        t.problem("result_mismatches", f"{cell}: in-doubt marker {got}")
                    if jstatus != "error":
                        t.problem("journal_problems", f"{cell}: in doubt but journal {jstatus}")
                    if not started:
                        # killed between the durable intent and the body's first line
                        t.counts["in_doubt_before_body"] += 1
                else:
                    if got != want:
                        t.problem("result_mismatches", f"{cell}: amo gave {got!r} != {want!r}")
                    if jstatus != "ok":
                        t.problem("journal_problems", f"{cell}: amo result but journal {jstatus}")
                    if not done:
                        t.problem("effects_lost", f"{cell}: amo result recorded, no effect")
                if len(done) == 1 and done[0] != [key, want]:
                    t.problem("result_mismatches", f"{cell}: amo row {done[0]} != {[key, want]}")
    return t


def run_torture(
    kills: int = 50,
    runs: int = 100,
    steps: int = 20,
    workers: int = 3,
    seed: int = 0,
    workdir: str | os.PathLike[str] | None = None,
    *,
    kill_interval: tuple[float, float] = (0.1, 1.0),
    concurrency: int = 8,
    drain_timeout: float = 120.0,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Torture ``workers`` worker processes with ``kills`` SIGKILLs; return the summary."""
    say = log or (lambda _: None)
    base = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="torture-"))
    tdir = base / "torture"
    tdir.mkdir(parents=True, exist_ok=True)
    journal, effects = tdir / "journal.db", tdir / "effects.db"
    prepare(journal, effects)
    rng = random.Random(seed)
    specs: list[RunSpec] = []

    def new_batch() -> None:
        batch = make_specs(seed, steps, start=len(specs), count=runs)
        create_runs(journal, batch)
        specs.extend(batch)

    new_batch()
    # A little work inside each transaction, so that kills land inside open transactions too.
    pool = Pool(journal, effects, tdir, workers, concurrency, tx_work=0.003)
    conn = _connect(journal)
    watch = JournalWatch()
    delivered = ready_kills = 0
    started = time.monotonic()
    try:
        pool.start_all()
        next_kill = time.monotonic() + rng.uniform(*kill_interval)
        last_snapshot = time.monotonic()
        while delivered < kills:
            pool.revive()
            now = time.monotonic()
            if now >= next_kill:
                slot = pool.slots[rng.randrange(workers)]
                if slot.alive():
                    ready_kills += slot.ready()
                    slot.kill()
                    delivered += 1
                    pool.restart(slot)
                next_kill = now + rng.uniform(*kill_interval)
            if now - last_snapshot > 1.0:
                watch.snapshot(conn)
                last_snapshot = now
                if unfinished(conn) < max(1, runs // 2):
                    new_batch()
                say(
                    f"  {now - started:6.1f}s kills={delivered}/{kills} runs={len(specs)} "
                    f"unfinished={unfinished(conn)}"
                )
            time.sleep(0.01)  # the kill schedule's clock, not a synchronization
        say(f"  {time.monotonic() - started:6.1f}s kills done; letting every run finish")
        finished = wait_until_done(conn, pool, drain_timeout, watch)
        watch.snapshot(conn, full=True)
        say(f"  {time.monotonic() - started:6.1f}s drained={finished}; stopping workers")
        pool.stop()
    finally:
        pool.kill_all()
        conn.close()
    say(f"  {time.monotonic() - started:6.1f}s reference run of {len(specs)} runs")
    reference = reference_outputs(base / "reference", specs, drain_timeout)
    say(f"  {time.monotonic() - started:6.1f}s checking")
    tally = check(journal, effects, specs, reference)
    for problem in watch.rewritten:
        tally.problem("entries_rewritten", problem)
    for exit_ in pool.unexpected_exits:
        tally.problem("unexpected_exits", exit_)
    logged = pool.log_warnings()
    for line, n in logged.items():
        if not line.startswith("WARNING"):
            tally.problem("worker_errors", f"{n}x {line}")
    c = tally.counts
    summary: dict[str, Any] = {
        "kills": delivered,
        "kills_after_ready": ready_kills,
        "runs": len(specs),
        "completed": c["completed"],
        "effects_duplicated": c["effects_duplicated"],
        "effects_lost": c["effects_lost"],
        "in_doubt": c["in_doubt"],
        "in_doubt_with_effect": c["in_doubt_with_effect"],
        "in_doubt_without_effect": c["in_doubt_without_effect"],
        "in_doubt_before_body": c["in_doubt_before_body"],
        "keyed_reexecuted": c["keyed_reexecuted"],
        "tx_reexecuted": c["tx_reexecuted"],
        "amo_executed_twice": c["amo_executed_twice"],
        "result_mismatches": c["result_mismatches"],
        "journal_problems": c["journal_problems"],
        "entries_rewritten": c["entries_rewritten"],
        "unstable_keys": c["unstable_keys"],
        "unexpected_exits": c["unexpected_exits"],
        "worker_errors": c["worker_errors"],
        "reference_mismatch": c["reference_mismatch"],
        "snapshots": watch.snapshots,
        "worker_warnings": {k: v for k, v in logged.items() if k.startswith("WARNING")},
        "seed": seed,
        "seconds": round(time.monotonic() - started, 1),
        "workdir": str(base),
        "problems": tally.problems,
    }
    summary["ok"] = (
        finished
        and summary["completed"] == summary["runs"]
        and not any(
            summary[k]
            for k in (
                "effects_duplicated",
                "effects_lost",
                "amo_executed_twice",
                "result_mismatches",
                "journal_problems",
                "entries_rewritten",
                "unstable_keys",
                "unexpected_exits",
                "worker_errors",
                "reference_mismatch",
            )
        )
    )
    return summary


def summary_line(s: dict[str, Any]) -> str:
    return (
        f"kills={s['kills']} (after ready {s['kills_after_ready']}) runs={s['runs']} "
        f"completed={s['completed']} "
        f"effects_duplicated={s['effects_duplicated']} effects_lost={s['effects_lost']} "
        f"in_doubt={s['in_doubt']} (with effect {s['in_doubt_with_effect']}, without "
        f"{s['in_doubt_without_effect']}) keyed_reexecuted={s['keyed_reexecuted']} "
        f"tx_reexecuted={s['tx_reexecuted']} "
        f"result_mismatches={s['result_mismatches']} journal_problems={s['journal_problems']} "
        f"entries_rewritten={s['entries_rewritten']} seed={s['seed']} "
        f"seconds={s['seconds']} ok={s['ok']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=100, help="runs per batch")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=8, help="runs per worker")
    parser.add_argument("--kill-min", type=float, default=0.1, help="seconds between kills")
    parser.add_argument("--kill-max", type=float, default=1.0)
    parser.add_argument("--workdir", default=None, help="kept afterwards (default: a temp dir)")
    args = parser.parse_args(argv)
    summary = run_torture(
        kills=args.kills,
        runs=args.runs,
        steps=args.steps,
        workers=args.workers,
        seed=args.seed,
        workdir=args.workdir,
        kill_interval=(args.kill_min, args.kill_max),
        concurrency=args.concurrency,
    )
    for problem in summary["problems"]:
        print("PROBLEM", problem)
    if summary["worker_warnings"]:
        print("worker warnings:", summary["worker_warnings"])
    print(f"workdir: {summary['workdir']}")
    print(summary_line(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
