"""Executing a run: the workflow function called against its journal, and what came of it.

One function, ``execute``, used by the worker for every run it executes and by
``undying.testing.replay_check`` for re-executing finished runs against new code. It calls the
workflow with its context, maps every way the call can end (a result, an error, the run's
cancellation, a release to wait, a restart with new input, a lost lease, a BaseException the
code raised) to an ``Outcome``, and leaves what to do with it (finish the run, start its next
generation, hand it back) to the caller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import observe
from .attempts import unwinds_the_run
from .errors import LeaseLost, SerializationError, WorkflowCancelled, WorkflowFailed
from .failures import type_path
from .journal import Recorder
from .scope import ActiveRun, current_execution, current_run
from .signals import ContinueAsNew, Suspended
from .store.base import CANCELLED, COMPLETED, FAILED, Entry

#: how an execution can end besides the run's terminal statuses
SUSPENDED = "suspended"
CONTINUED = "continued"
LEASE_LOST = "lease lost"
#: reported to observers only: the worker stopped while the execution ran (it is handed back)
INTERRUPTED = "interrupted"

Workflow = Callable[..., Coroutine[Any, Any, Any]]
log = logging.getLogger("undying.worker")


@dataclass(slots=True)
class Outcome:
    """How one execution of a run ended.

    ``status`` is a terminal run status (completed, failed, cancelled) or one of SUSPENDED,
    CONTINUED, LEASE_LOST; ``pending`` are buffered entries to write with the finish."""

    status: str
    output: bytes | None = None
    error: BaseException | None = None
    pending: list[Entry] = field(default_factory=list)
    again: ContinueAsNew | None = None


async def execute(
    rec: Recorder,
    fn: Workflow,
    ctx: ActiveRun,
    args: list[Any] | tuple[Any, ...],
    kwargs: dict[str, Any],
    carried: Mapping[str, str] | None = None,
) -> Outcome:
    """Run ``fn(ctx, *args, **kwargs)`` to its end against ``rec``; see the module docstring.

    The run's deadline (if any) cancels it when it passes; a cancellation requested before
    the execution started is delivered at its first journaled call. ``carried``: what the
    run's input carries for the observer (``observe.unpack_input``)."""
    run = rec.run
    deadline_timer: asyncio.TimerHandle | None = None
    if run.deadline is not None:
        left = run.deadline - time.time()
        if left <= 0:
            rec.cancel(WorkflowCancelled("the run's deadline passed"))
        else:
            deadline_timer = asyncio.get_running_loop().call_later(
                left, rec.cancel, WorkflowCancelled("the run's deadline passed")
            )
    if run.cancel_requested:
        rec.cancel(WorkflowCancelled())
    watcher = observe.observer
    watched = (
        None
        if watcher is None
        else watcher.run_started(run, replaying=bool(rec.cursor.entries), carried=carried or {})
    )
    try:
        outcome = await _run(rec, fn, ctx, args, kwargs, deadline_timer)
    except BaseException as exc:  # the worker stopping: the execution ends here, unfinished
        if watcher is not None:
            watcher.run_finished(watched, INTERRUPTED, exc)
        raise
    if watcher is not None:
        watcher.run_finished(watched, outcome.status, outcome.error)
    return outcome


async def _run(
    rec: Recorder,
    fn: Workflow,
    ctx: ActiveRun,
    args: list[Any] | tuple[Any, ...],
    kwargs: dict[str, Any],
    deadline_timer: asyncio.TimerHandle | None,
) -> Outcome:
    run = rec.run
    token = current_run.set(ctx)
    execution = current_execution.set(rec)
    try:
        result = await fn(ctx, *args, **kwargs)
    except Suspended:
        return Outcome(SUSPENDED)
    except ContinueAsNew as again:
        return Outcome(CONTINUED, again=again)
    except LeaseLost:
        return Outcome(LEASE_LOST)
    except WorkflowCancelled as exc:
        return Outcome(CANCELLED, error=exc, pending=rec.take_pending())
    except Exception as exc:
        return Outcome(FAILED, error=exc, pending=rec.take_pending())
    except BaseException as exc:
        if unwinds_the_run(exc):
            raise
        return Outcome(FAILED, error=aborted(run.run_id, exc), pending=rec.take_pending())
    finally:
        current_run.reset(token)
        current_execution.reset(execution)
        if deadline_timer is not None:
            deadline_timer.cancel()
    try:
        output = rec.codec.encode(result, root=f"result of workflow {run.workflow}")
    except SerializationError as exc:
        return Outcome(FAILED, error=exc, pending=rec.take_pending())
    return Outcome(COMPLETED, output=output, pending=rec.take_pending())


def aborted(run_id: str, exc: BaseException) -> WorkflowFailed:
    """The run's failure for a BaseException its workflow code raised (SystemExit, a
    CancelledError of its own): recorded, instead of stopping the worker or ending the run's
    task silently (and having the run taken over again and again)."""
    error_type = type_path(exc).replace(":", ".")
    log.error(
        "run %r: the workflow raised %s: %s; the run is marked failed", run_id, error_type, exc
    )
    failed = WorkflowFailed(
        f"the workflow raised {error_type}: {exc}", error_type=error_type, error_message=str(exc)
    )
    failed.__cause__ = exc
    return failed
