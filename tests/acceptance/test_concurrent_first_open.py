"""Workers started together on a database file nobody has created yet all open it.

Switching a new file to WAL needs an exclusive lock that SQLite refuses at once, whatever the
busy timeout, while another connection holds the file; before the store retried that, about
one first open in thirty failed with "stayed locked ... for more than 10 s" (at once).
"""

from __future__ import annotations

import asyncio
import multiprocessing
from multiprocessing.synchronize import Barrier
from pathlib import Path

from undying.store.sqlite import SQLiteStore

PROCESSES = 3
ROUNDS = 30


def _open(path: str, barrier: Barrier, results: multiprocessing.Queue[str]) -> None:
    async def main() -> str:
        store = SQLiteStore(path)
        barrier.wait()  # all processes open the new file at the same moment
        try:
            await store.open(f"worker-{multiprocessing.current_process().pid}")
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        await store.close()
        return "ok"

    results.put(asyncio.run(main()))


def test_processes_opening_a_new_file_together_all_succeed(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    failures: list[str] = []
    for round_ in range(ROUNDS):
        path = str(tmp_path / f"new-{round_}.db")
        barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
        procs = [ctx.Process(target=_open, args=(path, barrier, results)) for _ in range(PROCESSES)]
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=60) for _ in procs]
        for proc in procs:
            proc.join(timeout=60)
        failures += [o for o in outcomes if o != "ok"]
    opens = ROUNDS * PROCESSES
    assert failures == [], f"{len(failures)} of {opens} first opens failed: {failures[:3]}"
