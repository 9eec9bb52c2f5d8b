"""Running a step: its policy, its attempts, and what each outcome writes to the journal.

A step at a position that the journal already holds returns the recorded outcome and runs
nothing. Otherwise: an at-most-once step first writes an intent (fsynced); any other step makes
the buffered values durable; then attempts run, with retries and backoff, until one succeeds
or the policy gives up, and exactly one outcome is written. Code inside an attempt sees its
own identity (``undying.current_step()``) and not the workflow's context, so a step may read
clocks and call other steps as plain functions.

A BaseException out of an attempt that is not the run unwinding (``SystemExit`` from argparse
in a tool, a ``CancelledError`` a library raised on its own) is carried out as ``StepAborted``
and recorded as the step's failure, without retries: left alone it would stop the event loop,
or end the run's task silently and have the run taken over again and again.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from . import determinism, known_types, observe
from .errors import (
    InvalidArgument,
    LeaseLost,
    SerializationError,
    StepInDoubt,
    WorkflowCancelled,
)
from .failures import describe_error, step_failure, type_path
from .journal import Recorder, done
from .scope import StepInfo, current_run, current_step, idempotency_key_for
from .signals import StepAborted, Unwinding
from .store.base import ERROR, INTENT, OK, Entry, TransactionFnFailed, retry_transient

log = logging.getLogger("undying.steps")


@dataclass(frozen=True, slots=True)
class StepPolicy:
    """How a step is run: name, retries, timeout and effect guarantee (validated)."""

    name: str
    retries: int = 0
    backoff: float = 2.0
    retry_delay: float = 1.0
    max_delay: float = 60.0
    timeout: float | None = None
    at_most_once: bool = False
    non_retryable: tuple[type[BaseException], ...] = ()
    #: seconds the failure itself asks for (an HTTP ``Retry-After``), or None for the backoff
    retry_delay_from: Callable[[BaseException], float | None] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidArgument(f"a step name must be a non-empty string, not {self.name!r}")
        if not _whole(self.retries) or self.retries < 0:
            raise InvalidArgument(f"retries must be a whole number >= 0, not {self.retries!r}")
        for label in ("backoff", "retry_delay", "max_delay"):
            value = getattr(self, label)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise InvalidArgument(f"{label} must be a number >= 0, not {value!r}")
        timeout = self.timeout
        if timeout is not None and (
            not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0
        ):
            raise InvalidArgument(f"timeout must be a positive number of seconds, not {timeout!r}")
        if not isinstance(self.non_retryable, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in self.non_retryable
        ):
            raise InvalidArgument("non_retryable must be a tuple of exception classes")
        if self.retry_delay_from is not None and not callable(self.retry_delay_from):
            raise InvalidArgument("retry_delay_from must be a function of the exception, or None")
        if self.at_most_once and self.retries:
            raise InvalidArgument(
                "an at_most_once step cannot be retried automatically (a retry is a second "
                "run); drop retries= or at_most_once="
            )

    def delay(self, attempt: int, jitter: float, exc: BaseException | None = None) -> float:
        """Seconds to wait after failed ``attempt`` (1-based): what the error asks for when
        ``retry_delay_from`` knows (capped), else exponential, capped, jittered."""
        if self.retry_delay_from is not None and exc is not None:
            asked = self.retry_delay_from(exc)
            if asked is not None:
                return min(self.max_delay, max(0.0, asked))
        base = min(self.max_delay, self.retry_delay * self.backoff ** (attempt - 1))
        return base * (0.5 + jitter / 2)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def callable_name(fn: Callable[..., Any], *, strict: bool = False) -> str:
    """``module:qualname``, the default journal name of a workflow or step.

    A function of a script run as ``python agent.py`` is named ``agent:...``, the name it has in
    ``undying worker agent:app``; ``strict`` (registering a workflow or decorated step) refuses a
    ``__main__`` that no other process can import (InvalidArgument: pass ``name=``)."""
    return known_types.qualified_name(fn, strict=strict)


_DEFAULT_POLICIES: dict[Any, StepPolicy] = {}


def policy_of(fn: Callable[..., Any]) -> StepPolicy:
    """The policy of a decorated step, or a default one-attempt policy for a plain callable."""
    policy: StepPolicy | None = getattr(fn, "__undying_step__", None)
    if policy is not None:
        return policy
    try:
        return _DEFAULT_POLICIES[fn]
    except (KeyError, TypeError):
        policy = StepPolicy(name=callable_name(fn))
        with contextlib.suppress(TypeError):  # unhashable callables are not cached
            _DEFAULT_POLICIES[fn] = policy
        return policy


def is_async_callable(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    return not inspect.isroutine(fn) and inspect.iscoroutinefunction(type(fn).__call__)


# -- one step ---------------------------------------------------------------------------------
async def run_step(
    rec: Recorder,
    seq: int,
    policy: StepPolicy,
    fn: Callable[..., Any],
    is_async: bool,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """The step at ``seq``: its recorded outcome, or its attempts and the one outcome written."""
    arg_digest = rec.digest(args, kwargs)
    entry = rec.recorded(seq, "step", policy.name)
    if entry is not None:
        rec.check_digest(seq, entry, policy.name, arg_digest)
        if observe.observer is not None:
            observe.observer.step_finished(
                observe.observer.step_started(
                    rec.run, seq, policy.name, entry.attempt, replayed=True
                ),
                None,
            )
        if entry.status == OK:
            return await rec.value(entry)
        if entry.status == ERROR:
            raise step_failure(await rec.value(entry), policy.name)
        if entry.status == INTENT:
            raise await _in_doubt(rec, seq, policy, entry)
    started = time.time()
    if policy.at_most_once:
        intent = Entry(seq, "step", policy.name, INTENT, None, arg_digest, 1, started)
        await rec.commit(intent, durable=True)
    elif rec.pending or (rec.flushing is not None and not rec.flushing.done()):
        await rec.flush()  # (has_pending(), spelled out: this runs once per step)
    run = rec.run
    attempt = 0
    rec.inflight += 1
    try:
        while True:
            attempt += 1
            info = StepInfo(run.run_id, seq, policy.name, attempt, run.generation)
            watcher = observe.observer
            token = (
                None
                if watcher is None
                else watcher.step_started(run, seq, policy.name, attempt, replayed=False)
            )
            try:
                result = await run_attempt(info, policy, fn, is_async, args, kwargs)
            except asyncio.CancelledError as exc:  # the run unwinding (shutdown, timeout)
                if watcher is not None:
                    watcher.step_finished(token, exc)
                raise
            except Exception as exc:
                if watcher is not None:
                    watcher.step_finished(token, exc)
                failure: BaseException = exc
                if isinstance(exc, StepAborted):  # SystemExit & co. mean stop: no retry
                    failure = exc.original
                    _log_aborted(rec, seq, policy, failure)
                elif attempt <= policy.retries and not isinstance(exc, policy.non_retryable):
                    jitter = determinism.original("random.random")()
                    await asyncio.sleep(policy.delay(attempt, jitter, exc))
                    continue
                payload = describe_error(failure, rec.codec, attempts=attempt)
                await rec.write(
                    [done(seq, "step", policy.name, ERROR, payload, arg_digest, attempt, started)]
                )
                # Raised from the record, so that replay raises exactly the same.
                raise step_failure(rec.codec.decode(payload), policy.name)  # noqa: B904
            if watcher is not None:
                watcher.step_finished(token, None)
            try:
                payload = rec.codec.encode(result, root=f"result of step {policy.name}")
            except SerializationError as exc:
                error = describe_error(exc, rec.codec, attempts=attempt, as_is=True)
                await rec.write(
                    [done(seq, "step", policy.name, ERROR, error, arg_digest, attempt, started)]
                )
                raise
            await rec.write(
                [done(seq, "step", policy.name, OK, payload, arg_digest, attempt, started)]
            )
            return result
    finally:
        rec.inflight -= 1


def _log_aborted(rec: Recorder, seq: int, policy: StepPolicy, exc: BaseException) -> None:
    log.error(
        "run %r: step %r at journal position %d raised %s: %s; recorded as the step's "
        "failure, not retried (raise an Exception for a failure to retry)",
        rec.run.run_id,
        policy.name,
        seq,
        type_path(exc).replace(":", "."),
        exc,
    )


async def _in_doubt(rec: Recorder, seq: int, policy: StepPolicy, entry: Entry) -> StepInDoubt:
    """An intent without an outcome: record (once) and surface StepInDoubt."""
    run = rec.run
    exc = StepInDoubt(
        step_name=policy.name,
        seq=seq,
        attempt=entry.attempt,
        idempotency_key=idempotency_key_for(run.run_id, run.generation, seq),
    )
    payload = describe_error(exc, rec.codec, in_doubt=True)
    await rec.commit(
        done(
            seq, "step", policy.name, ERROR, payload, entry.digest, entry.attempt, entry.started_at
        )
    )
    return exc


# -- one attempt --------------------------------------------------------------------------
async def run_attempt(
    info: StepInfo,
    policy: StepPolicy,
    fn: Callable[..., Any],
    is_async: bool,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """One attempt of a step, with the step's identity visible to its code and the workflow
    context hidden from it.

    Raises ``StepAborted`` for a BaseException the step raised that is not the run unwinding
    (see ``unwinds_the_run``), also from a sync step's thread."""
    info_token = current_step.set(info)
    run_token = current_run.set(None)
    try:
        if is_async:
            if policy.timeout is None:
                return await fn(*args, **kwargs)
            return await asyncio.wait_for(_contained(fn(*args, **kwargs)), policy.timeout)
        call = asyncio.to_thread(fn, *args, **kwargs)
        if policy.timeout is None:
            return await call
        return await asyncio.wait_for(_contained(call), policy.timeout)
    except Exception:
        raise
    except BaseException as exc:
        _contain(exc)
    finally:
        current_run.reset(run_token)
        current_step.reset(info_token)


def unwinds_the_run(exc: BaseException) -> bool:
    """Whether a BaseException raised in a run must propagate as it is: the task executing it
    is being cancelled (worker shutdown, a timeout around the call), undying delivers the
    run's cancellation or its own control flow, or the coroutine is being closed.

    A ``CancelledError`` while nobody cancels the task was raised by the code itself."""
    if isinstance(exc, asyncio.CancelledError):
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0
    return isinstance(exc, GeneratorExit | WorkflowCancelled | Unwinding)


async def _contained(attempt: Awaitable[Any]) -> Any:
    """Await an attempt inside the task ``asyncio.wait_for`` runs it in (Python 3.11): a
    SystemExit escaping a task stops the event loop before the caller could see it."""
    try:
        return await attempt
    except Exception:
        raise
    except BaseException as exc:
        _contain(exc)


def _contain(exc: BaseException) -> NoReturn:
    """Raise ``exc`` again if it unwinds the run, else a ``StepAborted`` carrying it."""
    if unwinds_the_run(exc):
        raise exc
    raise StepAborted(exc) from exc


# -- transactional steps ---------------------------------------------------------------------
async def run_transaction(
    rec: Recorder,
    seq: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> Any:
    """``fn(connection, *args)`` inside the journal database's own transaction, its entry
    written in the same transaction: both commit or neither does."""
    name = callable_name(fn)
    arg_digest = rec.digest(args, {})
    entry = rec.recorded(seq, "tx", name)
    if entry is not None:
        rec.check_digest(seq, entry, name, arg_digest)
        return await rec.outcome(entry)
    started = time.time()
    pending = rec.take_pending()
    run = rec.run

    def entries(result: Any) -> Sequence[Entry]:
        payload = rec.codec.encode(result, root=f"result of transaction {name}")
        return [*pending, done(seq, "tx", name, OK, payload, arg_digest, 1, started)]

    token = current_run.set(None)
    try:
        # A failure of the database around fn (a dropped connection, a busy file) rolls
        # everything back and is retried; if a lost COMMIT acknowledgement hid a success,
        # the retry is refused by the fence and replay returns the committed entry.
        return await retry_transient(
            lambda: rec.store.run_transaction(run.run_id, run.epoch, fn, args, entries),
            f"transaction {name} of run {run.run_id!r}",
        )
    except (LeaseLost, SerializationError, InvalidArgument):
        rec.pending[:0] = pending
        raise
    except TransactionFnFailed as failed:
        # fn itself raised and the transaction rolled back: record the failure so replay
        # raises it again.
        exc = failed.original
        payload = describe_error(exc, rec.codec)
        await rec.write([*pending, done(seq, "tx", name, ERROR, payload, arg_digest, 1, started)])
        raise exc from None
    finally:
        current_run.reset(token)
