"""The memory store answers like SQLite, operation by operation.

The contract suite checks each behaviour on its own; this test plays the same random sequences
of store calls (several workers, stale epochs, workers that die, events, children, queues,
cancellation, retention) against a SQLite file and a memory database, and compares every
answer and, after each call, every run and journal. Seeded, so a failure names a replayable
sequence.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path
from typing import Any

import pytest

from undying.store.base import (
    TERMINAL,
    Entry,
    NewRun,
    QueueLimits,
    RunFilter,
    Store,
    child_event_name,
)
from undying.store.memory import MemoryStore, drop_database
from undying.store.sqlite import SQLiteStore

RUN_IDS = ["a", "b", "c", "d", "e"]
EVENTS = ["go", "stop", *(child_event_name(run_id) for run_id in RUN_IDS)]
OPERATIONS = [*("create", "claim", "write") * 2, "finish", "suspend", "send", "take", "cancel"]
OPERATIONS += ["release", "resume", "heartbeat", "cancel_requests", "status_value", "continue"]
OPERATIONS += ["delete", "state", "copy", "restart"]
STEPS = 150


def fields(record: Any) -> tuple[Any, ...] | None:
    """A record's fields; wall-clock times (set_status_value, put_blobs) differ by a hair."""
    if record is None:
        return None
    values = (getattr(record, name) for name in record.__slots__)
    return tuple("now" if isinstance(v, float) and v > 1e9 else v for v in values)


async def snapshot(store: Store) -> Any:
    runs = []
    for run in await store.list_runs(RunFilter(limit=1000)):
        meta = await store.load_journal_meta(run.run_id)
        payloads = await store.load_payloads(run.run_id, [e.seq for e in meta if e.deferred])
        runs.append((fields(run), [(fields(e), payloads.get(e.seq)) for e in meta]))
    return runs, await store.next_wake_at()


class Operation:
    """One random store call, drawn once and played identically on each store."""

    def __init__(self, rnd: random.Random, run_id: str, epoch: int, now: float) -> None:
        self.name = rnd.choice(OPERATIONS)
        self.worker = rnd.choice(["w1", "w2"])
        self.run_id, self.other = run_id, rnd.choice(RUN_IDS)
        self.epoch = epoch - (1 if rnd.random() < 0.15 else 0)  # sometimes a zombie's
        self.now, self.lease = now, now + rnd.randint(0, 6)
        self.seed = rnd.random()  # each store draws the same arguments from it

    def entries(self, rnd: random.Random) -> list[Entry]:
        out = []
        for _ in range(rnd.randint(0, 2)):
            status = rnd.choice(["ok", "error", "intent", "waiting"])
            payload = rnd.choice([None, b"small", bytes(600), b"\x10ref"])
            finished = None if status in ("intent", "waiting") else self.now
            kind, key = rnd.choice(["step", "state"]), rnd.choice(["k", "x"])
            out.append(
                Entry(rnd.randint(0, 3), kind, key, status, payload, b"d", 1, self.now, finished)
            )
        return out

    async def play(self, store: Store, worker_id: str) -> Any:
        rnd = random.Random(self.seed)
        now, rid, epoch, pending = self.now, self.run_id, self.epoch, self.entries(rnd)
        name = self.name
        if name == "create":
            parent = rnd.choice([None, *(r for r in RUN_IDS if r != rid)])
            new = NewRun(rid, "wf", b"in", parent, rnd.choice([None, "q"]), rnd.randint(0, 2))
            owner = rnd.choice([None, worker_id])
            created, record = await store.create_run(
                new, owner=owner, lease_expires=self.lease, now=now
            )
            return created, fields(record)
        if name == "claim":
            limits = QueueLimits(
                "q", concurrency=rnd.choice([None, 1, 2]), rate_limit=rnd.choice([None, (1, 3.0)])
            )
            claims = await store.claim(
                worker_id,
                now=now,
                lease_expires=self.lease,
                limit=rnd.randint(0, 3),
                queues={"q": limits} if rnd.random() < 0.7 else {},
                running_per_queue={"q": rnd.randint(0, 1)},
            )
            return sorted((c.takeover, fields(c.run)) for c in claims)
        if name == "write":
            return await store.write_entries(rid, epoch, pending)
        if name == "finish":
            status = rnd.choice(sorted(TERMINAL))
            return await store.finish_run(
                rid, epoch, status, output=b"out", error=None, pending=pending, now=now
            )
        if name == "suspend":
            wake_at = rnd.choice([None, now + rnd.randint(0, 4)])
            waits = rnd.sample(EVENTS, rnd.randint(0, 2))
            return await store.suspend_run(
                rid, epoch, wake_at=wake_at, wait_events=waits, pending=pending, now=now
            )
        if name == "send":
            event, key = rnd.choice(EVENTS), rnd.choice([None, "k1", "k2"])
            return await store.send_event(rid, event, b"event", key, now)
        if name == "take":
            entry = Entry(rnd.randint(0, 4), "event", "go", "ok", None, None, 1, now, now)
            return await store.take_event(rid, epoch, rnd.choice(EVENTS[:3]), entry), entry.payload
        if name == "cancel":
            return sorted(await store.request_cancel(rid, b"cancelled", now))
        if name == "release":
            return await store.release_runs(worker_id, [rid], now)
        if name == "resume":
            return await store.resume_run(rid, now)
        if name == "heartbeat":
            return sorted(await store.heartbeat(worker_id, self.lease, [rid]))
        if name == "cancel_requests":
            return sorted(await store.cancel_requests(worker_id))
        if name == "status_value":
            return await store.set_status_value(rid, epoch, b"status")
        if name == "continue":
            return await store.continue_as_new(rid, epoch, b"next input", now)
        if name == "delete":
            return await store.delete_finished_runs(now - rnd.randint(0, 20))
        if name == "state":
            state = await store.load_state(rid, "k", rnd.randint(0, 4))
            return state, sorted(await store.ref_payloads())
        assert name == "copy", name
        return await store.copy_journal(rid, self.other, rnd.randint(0, 4))


def outcome_name(exc: Exception, operation: str) -> str:
    if operation == "copy":  # copying onto existing positions: IntegrityError / StoreError
        return "copy refused"
    return type(exc).__name__


@pytest.mark.parametrize("seed", range(12))
def test_memory_store_answers_like_sqlite(seed: int, tmp_path: Path) -> None:
    name = f"differential-{seed}-{os.getpid()}"
    path = str(tmp_path / "differential.db")
    generation = {"w1": 0, "w2": 0}  # a restarted worker gets a new id, as a new process does

    def worker_id(worker: str) -> str:
        return f"{worker}-{generation[worker]}"

    async def open_pair(worker: str) -> tuple[Store, Store]:
        pair = (SQLiteStore(path), MemoryStore(f"memory://{name}"))
        for store in pair:
            await store.open(worker_id(worker))
        return pair

    async def body() -> None:
        rnd = random.Random(seed)
        stores = {worker: await open_pair(worker) for worker in generation}
        try:
            for step in range(STEPS):
                run_id = rnd.choice(RUN_IDS)
                current = await stores["w1"][0].get_run(run_id)
                op = Operation(rnd, run_id, current.epoch if current else 1, 1000.0 + step)
                if op.name == "restart":  # the worker dies; another takes its place
                    for store in stores[op.worker]:
                        await store.close()
                    generation[op.worker] += 1
                    stores[op.worker] = await open_pair(op.worker)
                    continue
                answers = []
                for store in stores[op.worker]:
                    try:
                        answers.append(await op.play(store, worker_id(op.worker)))
                    except Exception as exc:
                        answers.append(outcome_name(exc, op.name))
                where = f"seed {seed}, step {step}: {op.name} of {op.run_id!r} by {op.worker}"
                assert answers[1] == answers[0], where
                sqlite_state = await snapshot(stores["w1"][0])
                assert await snapshot(stores["w1"][1]) == sqlite_state, where
        finally:
            for pair in stores.values():
                for store in pair:
                    await store.close()
            drop_database(name)

    asyncio.run(body())
