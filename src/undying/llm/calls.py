"""One model call as one journaled step, whatever the provider.

The step's argument is the normalized wire request (what the SDK would send, as plain JSON
values), so its digest is the digest of the request: a prompt changed under a running run is
reported on replay (a warning, or ``NonDeterminismError`` in strict mode). The step's result
is a small record, ``{"provider", "model", "body", "usage", "latency"}``, where ``body`` is the
response as the provider sent it (the SDK object's wire form), so the journal does not depend
on how the SDK's classes validate, and replay rebuilds the same SDK type from it without
validation, as the SDK itself does.

Each attempt that reaches the provider writes its tokens (``usage.py``), failed and cut ones
included; a final failure is journaled as ``ProviderError`` and surfaces as the SDK's own
exception class, on the first run and on replay alike (``retry.py``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import observe
from ..errors import StepFailed
from ..steps import current_context, current_step, step
from .retry import ProviderError, delay_from, describe, is_retryable, rebuild
from .usage import CallSite, call_site, note_saved, spent_row, write_rows

if TYPE_CHECKING:
    from ..context import Context

#: keyword arguments that shape how a request is sent, not what is asked: not digested
TRANSPORT_OPTIONS = frozenset({"timeout", "extra_headers"})


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """How model calls of one durable client are retried (``undying.llm.durable``)."""

    retries: int = 4
    retry_delay: float = 1.0
    backoff: float = 2.0
    max_delay: float = 60.0
    timeout: float | None = None
    replay_stream_text: bool = False
    #: the run's stream that streamed calls publish their text deltas to (None: none)
    publish_to: str | None = None


# -- requests ------------------------------------------------------------------------------
def prepare(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the kwargs to send, the normalized request to digest).

    One-shot iterables (a generator of messages) are materialized once, so the request that
    is digested is the one that is sent."""
    send: dict[str, Any] = {}
    wire: dict[str, Any] = {}
    for key, value in kwargs.items():
        if _is_omitted(value):
            continue
        if _is_iterable(value):
            value = list(value)
        send[key] = value
        if key not in TRANSPORT_OPTIONS:
            wire[key] = normalize(value)
    return send, wire


def _is_omitted(value: Any) -> bool:
    return type(value).__name__ in ("NotGiven", "Omit")


def _is_iterable(value: Any) -> bool:
    if isinstance(value, str | bytes | bytearray | dict | list | type) or hasattr(
        value, "model_dump"
    ):
        return False
    return hasattr(value, "__iter__")


def normalize(value: Any) -> Any:
    """``value`` as plain JSON-like data, deterministically (the digest depends on it)."""
    if value is None or isinstance(value, str | int | float | bool | bytes):
        return value
    if isinstance(value, Mapping):
        return {str(k): normalize(v) for k, v in value.items() if not _is_omitted(v)}
    if isinstance(value, type):
        return f"{value.__module__}:{value.__qualname__}"  # a response_format class, say
    if hasattr(value, "to_dict"):
        try:
            return normalize(value.to_dict(mode="json", warnings=False))
        except TypeError:
            pass
    if hasattr(value, "model_dump"):
        return normalize(
            value.model_dump(mode="json", by_alias=True, exclude_unset=True, warnings=False)
        )
    if isinstance(value, list | tuple | set | frozenset) or _is_iterable(value):
        items = [normalize(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def wire_form(obj: Any) -> dict[str, Any]:
    """An SDK response object as the provider sent it (fields by their API names, unknown
    fields and enum values kept as they came)."""
    data: dict[str, Any] = obj.to_dict(mode="json", warnings=False)
    return data


# -- usage meter --------------------------------------------------------------------------
class Meter:
    """What the current attempt has spent, as far as the provider has said so far."""

    __slots__ = ("attempt", "events", "model", "provider", "seq", "site", "usage")

    def __init__(self, site: CallSite, seq: int, attempt: int, provider: str, model: str) -> None:
        self.site = site
        self.seq = seq
        self.attempt = attempt
        self.provider = provider
        self.model = model
        self.usage: dict[str, int] | None = None
        self.events = 0

    async def saw_event(self, usage: dict[str, int] | None = None) -> None:
        """A stream delivered an event. At the first one, record that this attempt is
        spending, so a worker killed mid-stream leaves its spend behind (outcome ``open``,
        with the tokens the provider had reported by then)."""
        self.events += 1
        if usage:
            self.usage = usage
        if self.events == 1:
            await self.write("open")

    async def write(self, outcome: str, usage: dict[str, int] | None = None) -> None:
        row = spent_row(
            self.site,
            self.seq,
            self.attempt,
            self.provider,
            self.model,
            outcome,
            usage if usage is not None else self.usage,
        )
        await write_rows(self.site.store, [row])


# -- the step -----------------------------------------------------------------------------
class ModelCall:
    """A prepared call: run it with ``await call.run(send)`` (or ``start`` for streams)."""

    def __init__(
        self,
        provider: str,
        endpoint: str,
        policy: CallPolicy,
        kwargs: dict[str, Any],
        usage_of: Callable[[dict[str, Any]], dict[str, int] | None],
    ) -> None:
        self.provider = provider
        self.endpoint = endpoint
        self.policy = policy
        self.send_kwargs, self.request = prepare(kwargs)
        self.model = str(self.send_kwargs.get("model", ""))
        self.usage_of = usage_of
        self.invoked = False  # True once an attempt ran here (False after: answered by replay)

    def start(
        self, send: Callable[[dict[str, Any], Meter], Awaitable[dict[str, Any]]]
    ) -> Awaitable[dict[str, Any]]:
        """Take the call's journal position now; the returned awaitable runs it."""
        ctx = current_context()
        assert ctx is not None, "ModelCall.start is for workflow code"
        site = call_site(ctx)
        p = self.policy

        async def attempt(request: dict[str, Any]) -> dict[str, Any]:
            self.invoked = True
            return await self._attempt(site, send)

        stepped = step(
            name=self.endpoint,
            retries=p.retries,
            retry_delay=p.retry_delay,
            backoff=p.backoff,
            max_delay=p.max_delay,
            timeout=p.timeout,
            non_retryable=(ProviderError,),
            retry_delay_from=delay_from,
        )(attempt)
        return self._finish(ctx, stepped(self.request))

    async def run(
        self, send: Callable[[dict[str, Any], Meter], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        return await self.start(send)

    async def _finish(self, ctx: Context, pending: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        try:
            record = await pending
        except StepFailed as failed:
            raise sdk_error(failed) from None
        if not self.invoked:
            usage = record.get("usage") or {}
            note_saved(ctx, self.provider, self.model, usage)
        return record

    async def _attempt(
        self,
        site: CallSite,
        send: Callable[[dict[str, Any], Meter], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        info = current_step()
        seq, attempt = (info.seq, info.attempt) if info is not None else (-1, 1)
        meter = Meter(site, seq, attempt, self.provider, self.model)
        started = time.perf_counter()
        try:
            body = await send(self.send_kwargs, meter)
        except Exception as exc:
            await meter.write("cut" if meter.events else "error")
            observe.annotate(provider=self.provider, operation="chat", model=self.model)
            if is_retryable(exc) and attempt <= self.policy.retries:
                raise
            raise ProviderError(describe(exc)) from exc
        usage = self.usage_of(body) or meter.usage or {}
        model = str(body.get("model") or self.model)
        await meter.write("ok", usage)
        observe.annotate(
            provider=self.provider,
            operation="chat",  # GenAI semconv: every endpoint wrapped here is a chat call
            model=self.model,
            response_model=model,
            response_id=body.get("id"),
            input_tokens=usage.get("input"),
            output_tokens=usage.get("output"),
            cached_tokens=usage.get("cached"),
        )
        return {
            "provider": self.provider,
            "model": model,
            "body": body,
            "usage": usage,
            "latency": round(time.perf_counter() - started, 6),
        }


def sdk_error(failed: StepFailed) -> BaseException:
    """The exception the SDK raised for a failed call (rebuilt from the journal on replay)."""
    cause = failed.__cause__
    if isinstance(cause, ProviderError):
        live = cause.__cause__
        if live is not None:
            return live
        rebuilt = rebuild(cause.info)
        if rebuilt is not None:
            return rebuilt
    return failed
