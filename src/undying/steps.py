"""The ``@undying.step`` decorator, and what code can ask about where it runs.

A decorated function stays an ordinary function: called outside a workflow (or from inside
another step) it simply runs. Called from workflow code it becomes a journaled call of the
current run, so ``await search_web(q)`` and ``await ctx.step(search_web, q)`` are the same.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from . import known_types, streams
from .attempts import StepPolicy, callable_name, run_step
from .errors import InvalidArgument, UndyingError
from .scope import StepInfo, current_execution, current_run
from .scope import current_step as _current_step
from .validation import check_stream_name

if TYPE_CHECKING:
    from .context import Context

F = TypeVar("F", bound=Callable[..., Any])


def idempotency_key() -> str:
    """A key for the step that is running, stable across retries, crashes, replays and workers.

    Pass it to an outside API that deduplicates by key (most payment APIs do) and the effect
    happens once even though the step itself may run more than once::

        @undying.step(retries=3)
        async def charge(order: str, cents: int) -> str:
            return await psp.charge(order, cents, idempotency_key=undying.idempotency_key())
    """
    info = _current_step.get()
    if info is None:
        raise UndyingError(
            "undying.idempotency_key() is only meaningful inside a step; call it from the "
            "step function, not from workflow code"
        )
    return info.idempotency_key


def current_step() -> StepInfo | None:
    """The running step's run id, journal position, name and attempt (None outside a step)."""
    return _current_step.get()


def current_context() -> Context | None:
    """The ``Context`` of the workflow whose code is running (None outside a workflow, and
    inside a step: a step's code is not workflow code)."""
    return cast("Context | None", current_run.get())


def publish(stream: str, value: Any) -> Coroutine[Any, Any, None]:
    """Append ``value`` to the current run's stream ``stream``: ``ctx.publish`` for code that
    has no ``ctx``.

    In workflow code it is ``current_context().publish`` (journaled, exactly once). Inside a
    step it appends at least once: a step that runs again (a retry, or a new execution after
    a crash) publishes again, after a ``StreamRetry`` marker that tells readers how many of
    its earlier values to drop (see ``undying.streams``). Awaited, the value is durable."""
    ctx = current_run.get()
    if ctx is not None:
        return cast("Context", ctx).publish(stream, value)
    check_stream_name(stream)
    info, rec = _current_step.get(), current_execution.get()
    if info is None or rec is None:
        raise InvalidArgument(
            "undying.publish needs a run to publish to: call it in workflow code or in a "
            "step a workflow runs (outside, a step is a plain function call)"
        )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise InvalidArgument(
            "undying.publish is a coroutine: publish from an async step (a sync step runs in "
            "a thread, outside the event loop)"
        ) from None
    return streams.publish_from_step(rec, info, stream, value)


def in_workflow() -> bool:
    """Whether workflow code is running (so a journaled call would be recorded)."""
    return current_run.get() is not None


@overload
def step(fn: F, /) -> F: ...
@overload
def step(
    *,
    name: str | None = None,
    retries: int = 0,
    backoff: float = 2.0,
    retry_delay: float = 1.0,
    max_delay: float = 60.0,
    timeout: float | None = None,
    at_most_once: bool = False,
    non_retryable: tuple[type[BaseException], ...] = (),
    retry_delay_from: Callable[[BaseException], float | None] | None = None,
) -> Callable[[F], F]: ...
def step(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    retries: int = 0,
    backoff: float = 2.0,
    retry_delay: float = 1.0,
    max_delay: float = 60.0,
    timeout: float | None = None,
    at_most_once: bool = False,
    non_retryable: tuple[type[BaseException], ...] = (),
    retry_delay_from: Callable[[BaseException], float | None] | None = None,
) -> Any:
    """Make a function a durable step.

    ``retries`` extra attempts with exponential ``backoff`` starting at ``retry_delay`` seconds
    (capped at ``max_delay``, jittered); exceptions in ``non_retryable`` fail at once;
    ``timeout`` bounds each attempt. ``at_most_once=True`` records an intent durably before
    the call, so a crash mid-call surfaces as ``StepInDoubt`` instead of a second call.
    ``retry_delay_from(exc)`` may return the seconds a failure asks to wait (a rate limit's
    ``Retry-After``, say; capped at ``max_delay``), used instead of the backoff.
    """
    options: dict[str, Any] = {
        "retries": retries,
        "backoff": backoff,
        "retry_delay": retry_delay,
        "max_delay": max_delay,
        "timeout": timeout,
        "at_most_once": at_most_once,
        "non_retryable": non_retryable,
        "retry_delay_from": retry_delay_from,
    }
    StepPolicy("check", **options)  # refuse bad options here, where they were written

    def decorate(func: F) -> F:
        if not callable(func):
            raise InvalidArgument(f"@undying.step needs a function, not {func!r}")
        policy = StepPolicy(name or callable_name(func, strict=True), **options)
        known_types.register_function(func)  # its module's classes may be read back
        is_async = inspect.iscoroutinefunction(func)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ctx = current_run.get()
            if ctx is None:
                return func(*args, **kwargs)
            # The engine directly, not through Context._policy_step: one Python frame less on
            # the path every decorated step takes (measured: ~600 instructions of ~30,000).
            rec = ctx._rec  # type: ignore[attr-defined]
            return run_step(rec, rec.position(), policy, func, is_async, args, kwargs)

        wrapper.__undying_step__ = policy  # type: ignore[attr-defined]
        wrapper.__undying_target__ = func  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    if fn is not None:
        return decorate(fn)
    return decorate
