"""Passing database faults under a step whose result is large enough to be offloaded.

A result over the offload threshold is written as chunks (table ``blobs``) and then as a
journal row referring to them. Both must ride out what a small result rides out: another
process holding the write lock longer than the busy timeout, and a disk that is full for a
while. Each test makes the fault real (a second process in ``BEGIN IMMEDIATE``; a small tmpfs
filled to the last page), lifts it as soon as undying reports that it is retrying, and checks
that the run completed with its result intact.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import random
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

import undying
from undying import App, Context
from undying.journal import JournalCursor
from undying.payloads import OFFLOAD_THRESHOLD, is_ref
from undying.store.sqlite import SQLiteStore

RESULT_BYTES = 250_000
#: another process holding the write lock until it reads a line
LOCK_HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
"""


class _OnRetry(logging.Handler):
    """Calls ``lift`` (once) when the store layer logs that it is retrying a write."""

    def __init__(self, lift: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self.lift = lift
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "retrying" in message:
            self.messages.append(message)
            if len(self.messages) == 1:
                self.lift()


@contextlib.contextmanager
def _on_store_retry(lift: Callable[[], None]) -> Iterator[_OnRetry]:
    handler = _OnRetry(lift)
    logger = logging.getLogger("undying.store")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _big_result() -> bytes:
    return random.Random(250).randbytes(RESULT_BYTES)  # incompressible: stays 250 KB


def _run_large_result(app: App, run_id: str, fault: Callable[[], Awaitable[None]]) -> None:
    """Run a one-step workflow whose step starts ``fault`` and then returns 250 KB; check
    that the run completed and that its journal holds the whole result, offloaded."""

    @undying.step
    async def fetch() -> bytes:
        await fault()  # the fault starts while the step runs: only its result's write meets it
        return _big_result()

    @app.workflow(name="big")
    async def big(ctx: Context) -> str:
        return hashlib.sha256(await fetch()).hexdigest()

    async def main() -> tuple[str, bytes]:
        async with app:
            handle = await app.start(big, run_id=run_id)
            result = await handle.result(timeout=60)
            return result, await _journaled_result(app, run_id)

    result, journaled = asyncio.run(main())
    assert result == hashlib.sha256(_big_result()).hexdigest()
    assert journaled == _big_result()


async def _journaled_result(app: App, run_id: str) -> bytes:
    """The step's result as the journal holds it (joined from its chunks)."""
    store = app.store
    entries = await store.load_journal_meta(run_id)
    (step,) = [e for e in entries if e.kind == "step"]
    raw = (await store.load_payloads(run_id, [step.seq])).get(step.seq, step.payload)
    assert raw is not None and is_ref(raw), "the result was offloaded to chunks"
    payload = await JournalCursor(store, run_id, entries).payload(step)
    assert payload is not None
    value: bytes = app.codec.decode(payload)
    return value


def test_large_result_rides_out_a_write_lock_held_past_the_busy_timeout(tmp_path: Path) -> None:
    db = str(tmp_path / "locked.db")
    app = App(db, suspend_after=0.0)
    # A short busy timeout, so the foreign lock outlasts it quickly (the default is 10 s).
    app._store_template = SQLiteStore(db, busy_timeout=0.2)
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, db],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None

    def release() -> None:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()

    async def lock() -> None:
        assert holder.stdout is not None
        assert (await asyncio.to_thread(holder.stdout.readline)).strip() == "locked"

    with holder:
        try:
            with _on_store_retry(release) as retries:
                _run_large_result(app, "big-1", lock)
        finally:
            if holder.poll() is None:
                release()
            holder.wait(timeout=10)
    assert RESULT_BYTES > OFFLOAD_THRESHOLD
    assert any("journal write" in m for m in retries.messages), retries.messages


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (needs root: tests run as root here; skipped where mount is refused)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def _fill(path: Path) -> None:
    """Write ``path`` until the file system has no byte left."""
    with open(path, "wb", buffering=0) as f:
        for block in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise


def test_large_result_rides_out_a_disk_that_is_full_for_a_while(small_disk: Path) -> None:
    db = str(small_disk / "full.db")
    filler = small_disk / "filler"
    app = App(db, suspend_after=0.0)

    async def fill() -> None:
        _fill(filler)

    with _on_store_retry(lambda: os.remove(filler)) as retries:
        _run_large_result(app, "full-1", fill)
    assert any("disk is full" in m for m in retries.messages), retries.messages
