"""The exception tree of undying.

Every error undying raises on purpose derives from one root, so callers can catch
``UndyingError`` at a boundary. Cancellation is a control-flow signal, not an error: it derives
from ``BaseException`` so that an agent's ``except Exception:`` cannot swallow it and keep
running a run somebody cancelled.

::

    UndyingError
     ├── NonDeterminismError         replay diverged from the journal, or a raw clock/random call
     ├── StepInDoubt                 an at-most-once step may or may not have run
     ├── StepFailed                  a step's last attempt failed (recorded, re-raised on replay)
     ├── EventTimeout                (also a TimeoutError) wait_for_event expired
     ├── LeaseLost                   another worker owns the run now; this one must drop it
     ├── SerializationError          a value cannot be encoded, or a stored payload is corrupt
     ├── UnknownWorkflow             no workflow registered under that name
     ├── RunNotFound                 no run with that id
     ├── InvalidArgument             (also a ValueError) bad input to a public entry point
     │    └── StreamClosed           a publish to a stream that was closed, or whose run ended
     ├── StoreError                  the database is unusable (schema too new, bad URL, ...)
     └── WorkflowFailed              a run's error that cannot be rebuilt in this process
          └── RunQuarantined         a run kept taking its workers down and was set aside
    BaseException
     └── WorkflowCancelled           delivered at the next journaled call of a cancelled run

Each subclass takes its default message from its docstring's first line.
"""

from __future__ import annotations

from typing import Any


class UndyingError(Exception):
    """An undying error."""

    def __init__(self, message: str | None = None) -> None:
        if message is None:
            message = (type(self).__doc__ or type(self).__name__).strip().splitlines()[0]
        super().__init__(message)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidArgument(UndyingError, ValueError):
    """An argument given to undying is not valid."""


class StreamClosed(InvalidArgument):
    """The stream is closed: nothing more can be published to it.

    A stream is closed by ``ctx.close_stream`` and, for as long as its run has ended
    (completed, failed or cancelled), by the end of its run."""


class StoreError(UndyingError):
    """The journal database cannot be used."""


class NonDeterminismError(UndyingError):
    """The workflow did not replay the way it ran before."""


class StepInDoubt(UndyingError):
    """An at-most-once step started but its outcome was never recorded.

    Raised in the workflow at the call, instead of running the step a second time. Check the
    outside system (for example with ``idempotency_key``) and decide how to continue.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        step_name: str = "",
        seq: int = -1,
        attempt: int = 0,
        idempotency_key: str = "",
    ) -> None:
        if message is None:
            message = (
                f"step {step_name!r} (journal position {seq}, attempt {attempt}) was started "
                f"but its outcome was never recorded; it is at-most-once, so it is not run "
                f"again. Check the outside system with idempotency key {idempotency_key!r}."
            )
        super().__init__(message)
        self.step_name = step_name
        self.seq = seq
        self.attempt = attempt
        self.idempotency_key = idempotency_key


class StepFailed(UndyingError):
    """A step failed on its last attempt."""

    def __init__(
        self,
        message: str | None = None,
        *,
        step_name: str = "",
        error_type: str = "",
        error_message: str = "",
        attempts: int = 0,
    ) -> None:
        if message is None:
            message = (
                f"step {step_name!r} failed after {attempts} attempt(s): "
                f"{error_type}: {error_message}"
            )
        super().__init__(message)
        self.step_name = step_name
        self.error_type = error_type
        self.error_message = error_message
        self.attempts = attempts

    @property
    def message(self) -> str:
        return self.error_message


class EventTimeout(UndyingError, TimeoutError):
    """No event arrived before the wait's timeout."""


class LeaseLost(UndyingError):
    """Another worker took this run over; this worker may no longer write to its journal."""


class SerializationError(UndyingError, TypeError):
    """A value cannot be serialized, or a stored payload cannot be read back."""

    def __init__(self, message: str | None = None, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class UnknownWorkflow(UndyingError, LookupError):
    """No workflow is registered under that name."""


class RunNotFound(UndyingError, LookupError):
    """No run has that id."""


class WorkflowCancelled(BaseException):
    """The run was cancelled."""

    def __init__(self, message: str | None = None, *args: Any) -> None:
        super().__init__(message or "the run was cancelled", *args)


class WorkflowFailed(UndyingError):
    """A run ended with an error that cannot be rebuilt in this process."""

    def __init__(
        self, message: str | None = None, *, error_type: str = "", error_message: str = ""
    ) -> None:
        super().__init__(message or f"{error_type}: {error_message}")
        self.error_type = error_type
        self.error_message = error_message


class RunQuarantined(WorkflowFailed):
    """A run kept taking its workers down and was set aside (status failed, journal kept).

    Its owner died (or stopped renewing its lease) ``takeovers`` times in a row without the
    journal moving past ``position``, more than ``App(max_takeovers_without_progress=...)``
    allows. Fix the cause, then ``undying resume RUN``.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        run_id: str = "",
        takeovers: int = 0,
        position: int = 0,
        generation: int = 0,
    ) -> None:
        if message is None:
            where = f"journal position {position}"
            if generation:
                where += f" (generation {generation})"
            message = (
                f"run {run_id!r} quarantined: taken over {takeovers} times in a row without "
                f"progress at {where}: each time, its owner had died (a crash such as "
                "SIGSEGV, os._exit or an OOM kill) or stopped renewing its lease while "
                "executing it (see the workers' logs). Fix the cause, then "
                f"`undying resume {run_id}`"
            )
        super().__init__(message, error_type="undying.errors.RunQuarantined", error_message=message)
        self.run_id = run_id
        self.takeovers = takeovers
        self.position = position
