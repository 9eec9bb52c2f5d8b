"""The ``@undying.step`` decorator, step policies, and what code inside a step can ask.

A decorated function stays an ordinary function: called outside a workflow (or from inside
another step) it simply runs. Called from workflow code it becomes a journaled call of the
current run, so ``await search_web(q)`` and ``await ctx.step(search_web, q)`` are the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, overload

from .errors import InvalidArgument, UndyingError

if TYPE_CHECKING:
    from .context import Context

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class StepPolicy:
    """How a step is run: name, retries, timeout and effect guarantee."""

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

    def delay(self, attempt: int, jitter: float, exc: BaseException | None = None) -> float:
        """Seconds to wait after failed ``attempt`` (1-based): what the error asks for when
        ``retry_delay_from`` knows, else exponential, capped, jittered."""
        if self.retry_delay_from is not None and exc is not None:
            asked = self.retry_delay_from(exc)
            if asked is not None:
                return min(self.max_delay, max(0.0, asked))
        base = min(self.max_delay, self.retry_delay * self.backoff ** (attempt - 1))
        return base * (0.5 + jitter / 2)


class StepInfo(NamedTuple):
    """What a running step knows about itself (see ``current_step``).

    A NamedTuple, not a dataclass: one is built per attempt on the hot path, and a tuple is
    several times cheaper to build than a frozen dataclass."""

    run_id: str
    seq: int
    name: str
    attempt: int
    generation: int = 0

    @property
    def idempotency_key(self) -> str:
        return idempotency_key_for(self.run_id, self.generation, self.seq)


def idempotency_key_for(run_id: str, generation: int, seq: int) -> str:
    """``run:seq``; after ``continue_as_new`` positions restart at 0, so later generations
    add theirs (``run@2:seq``) and never reuse an earlier generation's key."""
    if generation:
        return f"{run_id}@{generation}:{seq}"
    return f"{run_id}:{seq}"


#: The context of the workflow whose code is running, or None (outside, or inside a step).
current_context: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "undying_context", default=None
)
#: The step whose code is running, or None.
current_step_info: contextvars.ContextVar[StepInfo | None] = contextvars.ContextVar(
    "undying_step", default=None
)


def workflow_context() -> Context | None:
    """The context of the workflow whose code is running; None outside a workflow and inside
    a step (whose code runs as plain code). Exported as ``undying.current_context()`` so that
    libraries can make their calls journaled without a ``ctx`` being passed down to them."""
    return current_context.get()


def in_workflow() -> bool:
    """Whether the calling code is workflow code (where calls are journaled and replayed)."""
    return current_context.get() is not None


def idempotency_key() -> str:
    """A key for the step that is running, stable across retries, crashes, replays and workers.

    Pass it to an outside API that deduplicates by key (most payment APIs do) and the effect
    happens once even though the step itself may run more than once::

        @undying.step(retries=3)
        async def charge(order: str, cents: int) -> str:
            return await psp.charge(order, cents, idempotency_key=undying.idempotency_key())
    """
    info = current_step_info.get()
    if info is None:
        raise UndyingError(
            "undying.idempotency_key() is only meaningful inside a step; call it from the "
            "step function, not from workflow code"
        )
    return info.idempotency_key


def current_step() -> StepInfo | None:
    """The running step's run id, journal position, name and attempt (None outside a step)."""
    return current_step_info.get()


def callable_name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"{module}:{qualname}"


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
    _check_policy(retries, backoff, retry_delay, max_delay, timeout, at_most_once, non_retryable)
    if retry_delay_from is not None and not callable(retry_delay_from):
        raise InvalidArgument("retry_delay_from must be a function of the exception, or None")
    if at_most_once and retries:
        raise InvalidArgument(
            "an at_most_once step cannot be retried automatically (a retry is a second run); "
            "drop retries= or at_most_once="
        )

    def decorate(func: F) -> F:
        if not callable(func):
            raise InvalidArgument(f"@undying.step needs a function, not {func!r}")
        policy = StepPolicy(
            name=name or callable_name(func),
            retries=retries,
            backoff=backoff,
            retry_delay=retry_delay,
            max_delay=max_delay,
            timeout=timeout,
            at_most_once=at_most_once,
            non_retryable=tuple(non_retryable),
            retry_delay_from=retry_delay_from,
        )
        is_async = inspect.iscoroutinefunction(func)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ctx = current_context.get()
            if ctx is None:
                return func(*args, **kwargs)
            return ctx._step(policy, func, is_async, args, kwargs)

        wrapper.__undying_step__ = policy  # type: ignore[attr-defined]
        wrapper.__undying_target__ = func  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    if fn is not None:
        return decorate(fn)
    return decorate


def _check_policy(
    retries: int,
    backoff: float,
    retry_delay: float,
    max_delay: float,
    timeout: float | None,
    at_most_once: bool,
    non_retryable: tuple[type[BaseException], ...],
) -> None:
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise InvalidArgument(f"retries must be a whole number >= 0, not {retries!r}")
    for label, value in (
        ("backoff", backoff),
        ("retry_delay", retry_delay),
        ("max_delay", max_delay),
    ):
        if not isinstance(value, int | float) or value < 0:
            raise InvalidArgument(f"{label} must be a number >= 0, not {value!r}")
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise InvalidArgument(f"timeout must be a positive number of seconds, not {timeout!r}")
    if not isinstance(non_retryable, tuple) or not all(
        isinstance(t, type) and issubclass(t, BaseException) for t in non_retryable
    ):
        raise InvalidArgument("non_retryable must be a tuple of exception classes")


async def run_attempt(
    info: StepInfo,
    policy: StepPolicy,
    fn: Callable[..., Any],
    is_async: bool,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """One attempt of a step, with the step's identity visible to its code and the workflow
    context hidden from it (a step may read clocks and call other steps as plain functions)."""
    info_token = current_step_info.set(info)
    ctx_token = current_context.set(None)
    try:
        if is_async:
            if policy.timeout is None:
                return await fn(*args, **kwargs)
            return await asyncio.wait_for(fn(*args, **kwargs), policy.timeout)
        call = asyncio.to_thread(fn, *args, **kwargs)
        if policy.timeout is None:
            return await call
        return await asyncio.wait_for(call, policy.timeout)
    finally:
        current_context.reset(ctx_token)
        current_step_info.reset(info_token)


def is_async_callable(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    return not inspect.isroutine(fn) and inspect.iscoroutinefunction(type(fn).__call__)
