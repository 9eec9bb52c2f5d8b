"""An openai-agents model provider (and tool wrapper) that makes ``Runner.run`` durable.

::

    from agents import Agent, Runner, function_tool
    from undying.llm.openai_agents import durable_run_config, durable_tool

    @durable_tool
    @function_tool
    async def lookup(order_id: str) -> str: ...

    @app.workflow(name="support")
    async def support(ctx, question: str) -> str:
        result = await Runner.run(agent, question, run_config=durable_run_config())
        return result.final_output

The seam is the SDK's ``ModelProvider`` / ``Model`` interface (as its Temporal integration
uses): inside a workflow each ``get_response`` is a journaled step
``openai_agents.<model>.get_response`` whose result is the response in JSON form; replay
rebuilds the ``ModelResponse`` without a request. ``stream_response`` streams live on the first
run and, on replay, yields the recorded ``response.completed`` event, from which the Runner
rebuilds the same response. Function tools run in workflow code, so wrap each with
``durable_tool`` (one step ``openai_agents.tool.<name>`` per call). Outside a workflow all of
it is the SDK's own behaviour. Install with ``pip install openai-agents``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import AsyncIterator
from typing import Any, cast

from agents import FunctionTool, RunConfig
from agents.items import ModelResponse
from agents.models.interface import Model, ModelProvider
from agents.models.openai_provider import OpenAIProvider
from agents.usage import deserialize_usage, serialize_usage
from openai._models import construct_type
from openai.types.responses import Response, ResponseCompletedEvent, ResponseOutputItem

from ..steps import current_context, step
from .calls import normalize, wire_form
from .retry import delay_from
from .usage import UsageRecorder

__all__ = ["DurableModel", "DurableModelProvider", "durable_run_config", "durable_tool"]

_END = object()
PROVIDER = "openai-agents"  # in token usage: (provider, model) = ("openai-agents", model name)


def _dump(response: ModelResponse) -> dict[str, Any]:
    return {
        "output": [wire_form(item) for item in response.output],
        "usage": serialize_usage(response.usage),
        "response_id": response.response_id,
        "request_id": response.request_id,
    }


def _load(record: dict[str, Any]) -> ModelResponse:
    return ModelResponse(
        output=[
            cast(ResponseOutputItem, construct_type(type_=ResponseOutputItem, value=o))
            for o in record["output"]
        ],
        usage=deserialize_usage(record["usage"]),
        response_id=record.get("response_id"),
        request_id=record.get("request_id"),
    )


_PARAMS = list(inspect.signature(Model.get_response).parameters)[1:]


def _tokens(record: dict[str, Any]) -> dict[str, int]:
    usage = record.get("usage") or {}
    details = usage.get("input_tokens_details") or {}
    if isinstance(details, list):  # serialize_usage keeps a list of details
        details = details[0] if details else {}
    return {
        "input": int(usage.get("input_tokens") or 0),
        "output": int(usage.get("output_tokens") or 0),
        "cached": int(details.get("cached_tokens") or usage.get("cached_tokens") or 0),
    }


def _request(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """What the call asks, as plain data: its digest tells a changed prompt on replay."""
    given = {**dict(zip(_PARAMS, args, strict=False)), **kwargs}
    return normalize(
        {
            "system": given.get("system_instructions"),
            "input": given.get("input"),
            "tools": [getattr(t, "name", type(t).__name__) for t in given.get("tools") or []],
            "previous_response_id": given.get("previous_response_id"),
        }
    )


class DurableModel(Model):
    """A ``Model`` whose calls are journaled steps inside workflows."""

    def __init__(self, inner: Model, name: str, *, retries: int = 3) -> None:
        self._inner = inner
        self._name = name
        self._retries = retries

    def _step(self, what: str, fn: Any) -> Any:
        return step(
            name=f"openai_agents.{self._name}.{what}",
            retries=self._retries,
            retry_delay_from=delay_from,
        )(fn)

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        ctx = current_context()
        if ctx is None:
            return await self._inner.get_response(*args, **kwargs)
        meter = UsageRecorder(ctx, PROVIDER, self._name)

        async def unit(request: Any) -> dict[str, Any]:
            try:
                record = _dump(await self._inner.get_response(*args, **kwargs))
            except Exception:
                await meter.spent(None, "error")
                raise
            await meter.spent(_tokens(record))
            return record

        record = await self._step("get_response", unit)(_request(args, kwargs))
        meter.replayed_if_not_spent(_tokens(record))
        return _load(record)

    async def stream_response(
        self, *args: Any, **kwargs: Any
    ) -> AsyncIterator[Any]:
        ctx = current_context()
        if ctx is None:
            async for event in self._inner.stream_response(*args, **kwargs):
                yield event
            return
        queue: asyncio.Queue[Any] = asyncio.Queue()
        meter = UsageRecorder(ctx, PROVIDER, self._name)

        async def unit(request: Any) -> dict[str, Any]:
            final: dict[str, Any] | None = None
            try:
                async for event in self._inner.stream_response(*args, **kwargs):
                    if isinstance(event, ResponseCompletedEvent):
                        final = wire_form(event.response)
                    queue.put_nowait(event)  # the one place live events are produced
            except Exception:
                await meter.spent(None, "cut")
                raise
            if final is None:
                raise RuntimeError("the model's stream ended without response.completed")
            await meter.spent(_tokens(final))
            return {"response": final}

        request = _request(args, kwargs)
        task = asyncio.ensure_future(self._step("stream_response", unit)(request))
        task.add_done_callback(lambda _: queue.put_nowait(_END))
        try:
            while (event := await queue.get()) is not _END:
                yield event
            record = await task
        finally:
            if not task.done():
                task.cancel()
        meter.replayed_if_not_spent(_tokens(record["response"]))
        if not meter.invoked:
            yield ResponseCompletedEvent.construct(
                type="response.completed",
                sequence_number=0,
                response=Response.construct(**record["response"]),
            )

    async def close(self) -> None:
        await self._inner.close()


class DurableModelProvider(ModelProvider):
    """Looks models up in ``inner`` (default: the SDK's ``OpenAIProvider``) and makes them
    durable."""

    def __init__(self, inner: ModelProvider | None = None, *, retries: int = 3) -> None:
        self._inner = inner or OpenAIProvider()
        self._retries = retries

    def get_model(self, model_name: str | None) -> Model:
        return DurableModel(
            self._inner.get_model(model_name), model_name or "default", retries=self._retries
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def durable_run_config(
    provider: ModelProvider | None = None, *, retries: int = 3, **options: Any
) -> RunConfig:
    """A ``RunConfig`` whose models are durable (other ``RunConfig`` fields as keywords).

    Model retries are the step's (``retries``), after the server's Retry-After if it sends
    one; give the inner provider's client ``max_retries=0`` to keep one retry layer."""
    return RunConfig(model_provider=DurableModelProvider(provider, retries=retries), **options)


def durable_tool(tool: FunctionTool, *, retries: int = 0) -> FunctionTool:
    """A copy of a ``@function_tool`` whose every call is a journaled step."""
    invoke = tool.on_invoke_tool

    async def call(tool_context: Any, arguments: str) -> Any:
        return await invoke(tool_context, arguments)  # an object with an async __call__

    stepped = step(name=f"openai_agents.tool.{tool.name}", retries=retries)(call)

    async def on_invoke_tool(tool_context: Any, arguments: str) -> Any:
        if current_context() is None:
            return await invoke(tool_context, arguments)
        return await stepped(tool_context, arguments)

    return dataclasses.replace(tool, on_invoke_tool=on_invoke_tool)
