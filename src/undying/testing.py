"""Helpers for testing your own agents with undying.

``temp_app()`` gives an App on a fresh SQLite file in strict mode, so a raw clock or random
call in workflow code fails the test instead of failing a replay in production.
``replay_check`` re-executes finished runs against the current code and reports divergence:
run it in CI before deploying a change to workflow code.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from .app import App
from .context import Context, Suspended
from .errors import NonDeterminismError, UndyingError
from .journal import JournalCursor
from .steps import current_context
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


@dataclass(slots=True)
class ReplayProblem:
    run_id: str
    workflow: str
    error: str


async def replay_check(app: App, *, limit: int = 1000) -> list[ReplayProblem]:
    """Re-execute finished runs from their journals against the code registered on ``app``.

    Nothing is written and no step runs: a call the journal does not hold is itself a
    divergence. Returns the runs that do not replay (empty list: safe to deploy)."""
    store = app.store
    problems: list[ReplayProblem] = []
    for status in (COMPLETED, FAILED):
        for run in await store.list_runs(RunFilter(status=status, limit=limit)):
            spec = app._workflows.get(run.workflow)
            if spec is None:
                problems.append(ReplayProblem(run.run_id, run.workflow, "workflow not registered"))
                continue
            cursor = await JournalCursor.load(store, run.run_id)
            ctx = _ReadOnlyContext(app, run, cursor)
            args, kwargs = app.codec.decode(run.input)
            token = current_context.set(ctx)
            try:
                await spec.fn(ctx, *args, **kwargs)
            except NonDeterminismError as exc:
                problems.append(ReplayProblem(run.run_id, run.workflow, str(exc)))
            except (Suspended, _Diverged) as exc:
                problems.append(ReplayProblem(run.run_id, run.workflow, str(exc) or "diverged"))
            except Exception:
                pass  # the recorded run failed too: replaying to the same failure is fine
            finally:
                current_context.reset(token)
    return problems


class _Diverged(UndyingError):
    """The code made a call the journal does not hold."""


class _ReadOnlyContext(Context):
    """A context that refuses to write: replay must be served entirely by the journal."""

    _read_only = True  # undying.llm counts no tokens as saved by a check

    async def _run_step(self, seq: int, policy: Any, *rest: Any) -> Any:
        if self._cursor.peek(seq) is None:
            raise _Diverged(
                f"run {self.run_id!r}: the code now calls step {policy.name!r} at journal "
                f"position {seq}, which the recorded run never did"
            )
        return await super()._run_step(seq, policy, *rest)

    async def _write(self, entries: list[Any], *, durable: bool = False) -> None:
        raise _Diverged(
            f"run {self.run_id!r}: the code now makes a call at journal position "
            f"{entries[-1].seq} that the recorded run never made"
        )


@asynccontextmanager
async def running(app: App) -> AsyncIterator[App]:
    """``async with running(temp_app()) as app:``: an open app that is closed afterwards."""
    async with app:
        yield app
