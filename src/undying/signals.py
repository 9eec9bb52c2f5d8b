"""undying's internal control flow: signals that unwind a workflow, never errors a user sees.

They derive from ``BaseException`` for the same reason ``WorkflowCancelled`` does: a workflow's
``except Exception:`` must not swallow them and carry on running a run that was released to
wait, or that restarts with fresh input. They sit at the bottom of the layers, beside
``errors``, because every layer above raises or catches them.
"""

from __future__ import annotations

from typing import Any


class Unwinding(BaseException):
    """Base of undying's internal control flow: like the run's own cancellation, it passes
    through steps and workflow code untouched."""


class Suspended(Unwinding):
    """Unwinds a workflow whose run was released to wait (its coroutine is dropped; any worker
    replays it when the timer fires or the event arrives)."""


class ContinueAsNew(Unwinding):
    """Unwinds a workflow that asked to restart with fresh input and an empty journal."""

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__("continue_as_new")
        self.call_args = args
        self.call_kwargs = kwargs


class StepAborted(Exception):
    """Carries out of a step a BaseException that is not the run unwinding: ``SystemExit``
    (argparse inside a tool raises it), ``KeyboardInterrupt`` raised by code, a
    ``CancelledError`` a library raised on its own. Left alone it would stop the event loop,
    or end the run's task silently and get the run taken over again and again; carried as an
    ordinary exception it becomes the step's recorded failure, without retries."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(f"{type(original).__name__}: {original}")
        self.original = original
