"""Helpers for testing your own agents with undying.

``temp_app()`` gives an App on a fresh SQLite file in strict mode, so a raw clock or random
call in workflow code fails the test instead of failing a replay in production (pass
``"memory://"`` for an in-memory store). ``replay_check`` re-executes finished runs against
the current code and reports divergence: run it in CI before deploying a change to workflow
code. ``eventually``, ``executing_here`` and ``claim_now`` let a test wait for what a worker
does without sleeping and without reaching into undying's internals.
"""

from __future__ import annotations

import inspect
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from . import observe
from .app import App, RunHandle
from .context import Context
from .errors import InvalidArgument, NonDeterminismError
from .execution import SUSPENDED, execute
from .journal import JournalCursor, Recorder, ReplayDiverged
from .store.base import COMPLETED, FAILED, RunFilter


def temp_app(path: str | None = None, **options: Any) -> App:
    """An App on a new SQLite file (in a temporary directory unless ``path`` is given),
    strict by default, with short leases and waits so tests run fast."""
    if path is None:
        path = os.path.join(tempfile.mkdtemp(prefix="undying-"), "test.db")
    options.setdefault("strict", True)
    options.setdefault("lease_ttl", 5.0)
    options.setdefault("poll_interval", 0.2)
    options.setdefault("suspend_after", 0.2)
    return App(path, **options)


@asynccontextmanager
async def running(app: App) -> AsyncIterator[App]:
    """``async with running(temp_app()) as app:``: an open app that is closed afterwards."""
    async with app:
        yield app


async def eventually(
    app: App,
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    timeout: float = 10.0,
    what: str = "the condition",
) -> None:
    """Return once ``condition()`` (sync or async) is true, re-checking whenever the app's
    runs may have changed; ``TimeoutError`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = condition()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{what} did not hold within {timeout} s")
        await app.wait_for_change(min(left, 0.05))


async def wait_for_status(handle: RunHandle[Any], status: str, *, timeout: float = 10.0) -> None:
    """Return once the run is ``status`` (e.g. "waiting": released, no coroutine held)."""

    async def reached() -> bool:
        return await handle.status() == status

    await eventually(handle.app, reached, timeout=timeout, what=f"run {handle.run_id!r} {status}")


def executing_here(app: App) -> set[str]:
    """Ids of the runs whose workflow code this app's worker holds in memory right now (a run
    released to wait is not among them)."""
    worker = app._worker
    return set() if worker is None else set(worker.recorders)


async def claim_now(app: App) -> None:
    """Make the app's worker claim due runs now instead of at its next scheduler turn."""
    worker = app._worker
    if worker is None:
        raise InvalidArgument("claim_now needs an app entered with a worker (worker=True)")
    await worker.claim_and_spawn()


@dataclass(slots=True)
class ReplayProblem:
    run_id: str
    workflow: str
    error: str


class _ReplayHost:
    """The host of a read-only replay: it never starts anything."""

    def __init__(self, app: App) -> None:
        self._app = app

    @property
    def suspend_after(self) -> float:
        return 0.0

    def workflow_name(self, workflow: object) -> str:
        return self._app.registry.name_of(workflow)

    async def start_child(
        self,
        parent_id: str,
        child_id: str,
        workflow: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        raise ReplayDiverged(
            f"run {parent_id!r}: the code now starts child {child_id!r} ({workflow}), which "
            "the recorded run never did"
        )

    def status_changed(self, run_id: str, value: Any) -> None:
        pass

    def streams_changed(self, run_id: str) -> None:
        pass


async def replay_check(app: App, *, limit: int = 1000) -> list[ReplayProblem]:
    """Re-execute finished runs from their journals against the code registered on ``app``.

    Nothing is written and no step runs: a call the journal does not hold is itself a
    divergence. Returns the runs that do not replay (empty list: safe to deploy)."""
    store = app._store_or_raise()  # the whole store: a Recorder takes the run-journal port
    host = _ReplayHost(app)
    problems: list[ReplayProblem] = []
    for status in (COMPLETED, FAILED):
        for run in await store.list_runs(RunFilter(status=status, limit=limit)):
            spec = app.registry.workflows.get(run.workflow)
            if spec is None:
                problems.append(ReplayProblem(run.run_id, run.workflow, "workflow not registered"))
                continue
            rec = Recorder(
                store,
                host,
                run,
                await JournalCursor.load(store, run.run_id),
                codec=app.codec,
                digest_codec=app.digest_codec,
                strict=app.strict,
                read_only=True,
            )
            run.cancel_requested, run.deadline = False, None  # replay the run as it ran
            args, kwargs, _ = observe.unpack_input(app.codec.decode(run.input))
            outcome = await execute(rec, spec.fn, Context(rec), args, kwargs)
            error = outcome.error
            if outcome.status == SUSPENDED:
                problems.append(ReplayProblem(run.run_id, run.workflow, "diverged"))
            elif isinstance(error, NonDeterminismError | ReplayDiverged):
                problems.append(ReplayProblem(run.run_id, run.workflow, str(error)))
            # Any other failure: the recorded run failed too; replaying to it is fine.
    return problems


__all__ = [
    "ReplayProblem",
    "claim_now",
    "eventually",
    "executing_here",
    "replay_check",
    "running",
    "temp_app",
    "wait_for_status",
]
