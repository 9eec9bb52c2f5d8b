"""``undying.llm.durable(client)``: pick the adapter for the client's SDK.

The adapter module of an SDK is imported only when a client of that SDK is wrapped, so the
SDKs stay optional extras (``pip install 'undying[openai]'``, ``'undying[anthropic]'``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar, cast

from ..errors import InvalidArgument
from ..validation import check_stream_name
from .calls import CallPolicy

C = TypeVar("C")


def durable(
    client: C,
    *,
    retries: int = 4,
    retry_delay: float = 1.0,
    backoff: float = 2.0,
    max_delay: float = 60.0,
    timeout: float | None = None,
    replay_stream_text: bool = False,
    publish_to: str | None = None,
) -> C:
    """Make ``client``'s model calls journaled steps inside workflows (plain calls outside).

    ``client`` is an ``openai.AsyncOpenAI`` (or ``AsyncAzureOpenAI``) or an
    ``anthropic.AsyncAnthropic``. Failed calls are retried by the step (the client itself is
    used with ``max_retries=0``): ``retries`` more attempts after 408, 409, 429, 5xx and
    connection errors, after the server's ``Retry-After`` or else an exponential backoff
    from ``retry_delay`` (capped at ``max_delay``); other errors are raised at once.
    ``timeout`` bounds each attempt as a step timeout; by default only the client's own
    request timeout applies (a step timeout runs each attempt in a task of its own: measured
    at ~0.3-0.5 ms more per call on a loaded machine, bench/llm_overhead.py).
    ``replay_stream_text=True`` makes a replayed stream yield its recorded text again (as
    text events) instead of nothing.
    ``publish_to="answer"`` publishes the text deltas of streamed calls (``.stream(...)``) to
    the run's stream ``answer`` as they arrive, so ``app.read_stream(run_id, "answer")``
    follows the answer token by token from anywhere; a call sent again after a crash or a
    cut publishes a ``StreamRetry`` marker before its new tokens (docs/streams.md). Calls
    that do not stream publish nothing. Wrap the same client twice for two streams.

    The result has the client's type: code written for the client works unchanged. A client
    already durable is returned as it is, its options kept; with another ``publish_to``, a
    new wrapper of the same client publishes there (the other options kept).
    """
    if isinstance(client, type):
        raise InvalidArgument(f"durable() takes a client instance, not the class {client!r}")
    policy = CallPolicy(
        retries, retry_delay, backoff, max_delay, timeout, replay_stream_text, publish_to
    )
    _check(policy)
    if getattr(client, "__undying_durable__", False):
        kept: CallPolicy = client._policy  # type: ignore[attr-defined]
        if publish_to is None or kept.publish_to == publish_to:
            return client
        policy = dataclasses.replace(kept, publish_to=publish_to)
        client = client._client  # type: ignore[attr-defined]
    module = type(client).__module__.split(".")[0]
    name = type(client).__name__
    adapter: Any
    if module == "openai" and name.startswith("Async"):
        from .openai_adapter import DurableOpenAI

        adapter = DurableOpenAI(client, policy)
    elif module == "anthropic" and name.startswith("Async"):
        from .anthropic_adapter import DurableAnthropic

        adapter = DurableAnthropic(client, policy)
    elif module in ("openai", "anthropic"):
        raise InvalidArgument(
            f"durable() needs the async client (Async{name.removeprefix('Async')}): workflow "
            f"code is async, and a {name} call would block every run of the worker"
        )
    else:
        raise InvalidArgument(
            f"durable() knows openai.AsyncOpenAI and anthropic.AsyncAnthropic clients, not "
            f"{type(client).__module__}.{name}; wrap other calls with @undying.step"
        )
    return cast(C, adapter)


def _check(policy: CallPolicy) -> None:
    if not isinstance(policy.retries, int) or isinstance(policy.retries, bool):
        raise InvalidArgument(f"retries must be a whole number >= 0, not {policy.retries!r}")
    if policy.retries < 0:
        raise InvalidArgument(f"retries must be a whole number >= 0, not {policy.retries!r}")
    for label in ("retry_delay", "backoff", "max_delay"):
        value = getattr(policy, label)
        if not isinstance(value, int | float) or value < 0:
            raise InvalidArgument(f"{label} must be a number >= 0, not {value!r}")
    if policy.publish_to is not None:
        check_stream_name(policy.publish_to)
    if policy.timeout is not None and (
        not isinstance(policy.timeout, int | float) or policy.timeout <= 0
    ):
        raise InvalidArgument(
            f"timeout must be a positive number of seconds, not {policy.timeout!r}"
        )
