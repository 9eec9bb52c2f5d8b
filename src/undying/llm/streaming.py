"""Durable streams: tokens reach the caller live, the final message is journaled.

``async with client.messages.stream(...) as stream`` (and the OpenAI equivalents) returns a
:class:`DurableStream`. On the first execution the call runs as a step in a task of its own:
it opens the SDK's own stream helper and hands every event to :meth:`DurableStream._emit`, the
one place live events are produced (a durable per-run event stream can publish from there
later), while the workflow iterates the events as they come, exactly as it would iterate the
SDK's stream. When the stream ends, the final message is the step's journaled result.

On replay the step is answered from the journal: no request; iteration yields nothing, or,
with ``replay_stream_text=True`` on ``durable()``, the recorded text again as text events,
and ``get_final_*()`` returns the recorded message. A worker killed mid-stream has journaled
nothing for the call, so recovery sends that call, and only that call, again.

A stream cut by the network is retried like any call (the step policy); its events so far
were already delivered, so a caller sees the cut attempt's text and then the new attempt's.

With ``durable(client, publish_to=NAME)``, ``_emit`` also queues each text delta on the run's
stream NAME (``streams.StepStream``: written in batches while the model streams, flushed
before the call's outcome is journaled, also when it fails). The call is a step, so its
tokens are published at least once: an attempt sent again (a cut stream retried, a worker
killed mid-stream) publishes a ``StreamRetry`` marker counting the cut attempt's tokens before
its own; a replay publishes nothing.
Leaving the ``async with`` block early consumes the rest of the stream and journals it (the
tokens are being paid for anyway, and replay must find the call's answer).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from .. import streams
from ..streams import StepStream
from .calls import Meter, ModelCall

_END = object()


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """What a provider's stream endpoint needs to plug into :class:`DurableStream`."""

    #: open the SDK's stream helper with the kwargs to send (an async context manager)
    open: Callable[[dict[str, Any]], Any]
    #: after the stream ended: the final message's wire form
    final_body: Callable[[Any], Awaitable[dict[str, Any]]]
    #: tokens reported so far, from the SDK stream object
    usage_so_far: Callable[[Any], dict[str, int] | None]
    #: the SDK's final object from the journaled record
    rebuild: Callable[[dict[str, Any]], Any]
    #: events that re-emit the recorded text on replay
    replay_events: Callable[[Any], list[Any]]
    #: the text delta an event carries (None: not a text event)
    text_of: Callable[[Any], str | None]


class DurableStream:
    """An async context manager and async iterator of the SDK's stream events."""

    def __init__(self, call: ModelCall, spec: StreamSpec) -> None:
        self._call = call
        self._spec = spec
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._task: asyncio.Future[dict[str, Any]] | None = None
        self._final: Any = None
        self._drained = False

    # -- context manager -----------------------------------------------------------------
    async def __aenter__(self) -> DurableStream:
        if self._task is None:
            self._task = asyncio.ensure_future(self._call.start(self._send))
            self._task.add_done_callback(self._ended)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = self._task
        if task is None:
            return
        if exc is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            return
        await self._drain()
        await task

    # -- the one place live events are produced ---------------------------------------------
    def _emit(self, event: Any, publish: StepStream | None = None) -> None:
        self._queue.put_nowait(event)
        if publish is not None:
            text = self._spec.text_of(event)
            if text and publish.error is None:  # a refused write is raised by flush()
                publish.add(text)

    async def _send(self, kwargs: dict[str, Any], meter: Meter) -> dict[str, Any]:
        spec = self._spec
        target = self._call.policy.publish_to
        publish = None if target is None else streams.running_step_stream(target)
        try:
            async with spec.open(kwargs) as sdk_stream:
                async for event in sdk_stream:
                    await meter.saw_event(spec.usage_so_far(sdk_stream))
                    self._emit(event, publish)
                body = await spec.final_body(sdk_stream)
        except BaseException:
            if publish is not None:  # the cut attempt's tokens land before any retry's
                with contextlib.suppress(Exception):
                    await publish.flush()
            raise
        if publish is not None:
            await publish.flush()
        return body

    def _ended(self, task: asyncio.Future[dict[str, Any]]) -> None:
        replayed = not task.cancelled() and task.exception() is None and not self._call.invoked
        if replayed and self._call.policy.replay_stream_text:
            try:
                events = self._spec.replay_events(self._rebuilt(task.result()))
            except Exception:  # the final object itself fails: get_final_*() will raise it
                events = []
            for event in events:
                self._queue.put_nowait(event)
        self._queue.put_nowait(_END)

    def _rebuilt(self, record: dict[str, Any]) -> Any:
        if self._final is None:
            self._final = self._spec.rebuild(record)
        return self._final

    # -- iteration ----------------------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[Any]:
        return self._events()

    async def _events(self) -> AsyncIterator[Any]:
        if self._task is None:
            await self.__aenter__()
        while not self._drained:
            event = await self._queue.get()
            if event is _END:
                self._drained = True
                break
            yield event
        assert self._task is not None
        await self._task  # raises the call's error (the SDK's exception class)

    async def _drain(self) -> None:
        async for _ in self._events():
            pass

    @property
    def text_stream(self) -> AsyncIterator[str]:
        """Only the text deltas (re-emitted on replay with ``replay_stream_text=True``)."""
        return self._texts()

    async def _texts(self) -> AsyncIterator[str]:
        text_of = self._spec.text_of
        async for event in self._events():
            text = text_of(event)
            if text:
                yield text

    async def until_done(self) -> DurableStream:
        await self._drain()
        return self

    async def close(self) -> None:
        """Like the SDK's ``close()``; the rest of the stream is still journaled."""
        await self._drain()

    async def _final_object(self) -> Any:
        await self._drain()
        assert self._task is not None
        return self._rebuilt(await self._task)

    @property
    def replayed(self) -> bool:
        """Whether this stream was answered from the journal (no provider call)."""
        return self._task is not None and self._task.done() and not self._call.invoked


def final_method(name: str) -> Callable[[DurableStream], Awaitable[Any]]:
    """``get_final_message`` and friends: the provider's name for the final object."""

    async def get_final(self: DurableStream) -> Any:
        return await self._final_object()

    get_final.__name__ = name
    get_final.__doc__ = "Wait for the stream to end; the final object (journaled)."
    return get_final
