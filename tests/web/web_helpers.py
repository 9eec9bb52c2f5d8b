"""Helpers of the web UI tests: databases with real runs, a real uvicorn server on loopback,
and a real worker process (the fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn
import web_agents

from undying.store.base import RunRecord
from undying.web.routes import OpenBackend, create_app
from undying.web.security import LOOPBACK_NAMES

T = TypeVar("T")
HERE = Path(__file__).parent
ARTIFACTS = HERE / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "test-token-0123456789abcdef"


def wait_until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll ``check`` until it returns something truthy, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


async def wait_for_status(db: str, run_id: str, statuses: set[str], timeout: float = 20.0) -> None:
    """Follow a run through the database (woken by its changes) until it has a status."""
    client = web_agents.make_app(db, worker=False)
    async with client:
        deadline = time.monotonic() + timeout
        while True:
            run = await client.store.get_run(run_id)
            if run is not None and run.status in statuses:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{run_id} is {run and run.status}, not in {statuses}")
            await client.store.wait_for_change(0.2)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end in a thread of its own: Playwright's sync API keeps an
    event loop running in the test's thread, where ``asyncio.run`` refuses to start."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def get_run(db: str, run_id: str) -> RunRecord | None:
    async def read() -> RunRecord | None:
        async with web_agents.make_app(db, worker=False) as client:
            return await client.store.get_run(run_id)

    return run_async(read())


async def populate(db: str) -> None:
    """Runs of every kind: completed with hostile values, failed, waiting for an event."""
    app = web_agents.make_app(db)
    async with app:
        hostile = await app.start("hostile-output", run_id="xss")
        await hostile.result()
        digest = await app.start("nightly-digest", ["hn", "arxiv"], run_id="digest")
        with contextlib.suppress(ValueError):
            await digest.result()
        research = await app.start("research-agent", "durable agents", run_id="trip-42")
        async for status, _ in research.watch():
            if status == "waiting":  # released: it waits in the database, not in memory
                break


@contextlib.contextmanager
def serve(
    open_backend: OpenBackend,
    *,
    token: str | None = None,
    allowed_hosts: frozenset[str] | None = LOOPBACK_NAMES,
) -> Iterator[str]:
    """A real uvicorn server for the UI on a free loopback port, in a thread; yields its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(open_backend, token=token, allowed_hosts=allowed_hosts)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1, lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), "the UI server to start")
        assert server.started, "the UI server did not start (see the log above)"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextlib.contextmanager
def worker_process(db: str) -> Iterator[subprocess.Popen[str]]:
    """``undying worker web_agents:app`` on ``db`` in a process of its own."""
    env = dict(os.environ, UNDYING_DATABASE_URL=db, PYTHONPATH=str(HERE))
    proc = subprocess.Popen(
        [sys.executable, "-m", "undying", "worker", "web_agents:app"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        line = proc.stdout.readline() if ready and proc.stdout else ""
        assert line.startswith("undying worker"), f"the worker did not start: {line!r}"
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
