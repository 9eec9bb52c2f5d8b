"""``openai.AsyncOpenAI``, durable: chat completions (create, parse, stream) and responses
(create, stream) as journaled steps; every other attribute is the client's own.

Replay rebuilds the SDK's objects from the journaled wire form the way the SDK builds them
(``construct``, no validation), and a parsed result (``parse``, ``stream``) goes through the
SDK's own parsing function again, with the ``response_format`` / ``text_format`` the code
passes, so the same class comes back: ``ParsedChatCompletion``, ``ParsedResponse``.
"""

from __future__ import annotations

from typing import Any

from openai.lib._parsing import parse_chat_completion
from openai.lib._parsing._responses import parse_response
from openai.lib.streaming.chat import ContentDeltaEvent
from openai.lib.streaming.responses import ResponseTextDeltaEvent
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from ..errors import InvalidArgument
from ..steps import in_workflow
from .calls import CallPolicy, Meter, ModelCall, wire_form
from .streaming import DurableStream, StreamSpec, final_method

PROVIDER = "openai"


def chat_usage(body: dict[str, Any]) -> dict[str, int] | None:
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details") or {}
    return {
        "input": int(usage.get("prompt_tokens") or 0),
        "output": int(usage.get("completion_tokens") or 0),
        "cached": int(details.get("cached_tokens") or 0),
    }


def responses_usage(body: dict[str, Any]) -> dict[str, int] | None:
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    details = usage.get("input_tokens_details") or {}
    return {
        "input": int(usage.get("input_tokens") or 0),
        "output": int(usage.get("output_tokens") or 0),
        "cached": int(details.get("cached_tokens") or 0),
    }


def _omit() -> Any:
    from openai import omit

    return omit


def _parsed_chat(body: dict[str, Any], kwargs: dict[str, Any]) -> Any:
    return parse_chat_completion(
        response_format=kwargs.get("response_format", _omit()),
        input_tools=kwargs.get("tools", _omit()),
        chat_completion=ChatCompletion.construct(**body),
    )


def _parsed_response(body: dict[str, Any], kwargs: dict[str, Any]) -> Any:
    return parse_response(
        text_format=kwargs.get("text_format", _omit()),
        input_tools=kwargs.get("tools", _omit()),
        response=Response.construct(**body),
    )


class DurableOpenAI:
    """What ``undying.llm.durable(openai.AsyncOpenAI(...))`` returns."""

    __undying_durable__ = True

    def __init__(self, client: Any, policy: CallPolicy) -> None:
        self._client = client
        self._quiet = client.with_options(max_retries=0)  # one retry layer: the step's
        self._policy = policy
        self.chat = _Chat(self)
        self.responses = _Responses(self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def __repr__(self) -> str:
        return f"<undying durable {self._client!r}>"

    def _call(self, endpoint: str, kwargs: dict[str, Any], usage: Any) -> ModelCall:
        return ModelCall(PROVIDER, f"openai.{endpoint}", self._policy, kwargs, usage)


class _Chat:
    def __init__(self, owner: DurableOpenAI) -> None:
        self._owner = owner
        self.completions = _ChatCompletions(owner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._owner._client.chat, name)


class _ChatCompletions:
    def __init__(self, owner: DurableOpenAI) -> None:
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._owner._client.chat.completions, name)

    async def create(self, **kwargs: Any) -> Any:
        """``chat.completions.create``, journaled (``stream=True``: use ``.stream()``)."""
        owner = self._owner
        if not in_workflow():
            return await owner._client.chat.completions.create(**kwargs)
        if kwargs.get("stream"):
            raise InvalidArgument(
                "a durable client streams with `async with client.chat.completions.stream(...)`"
                " (its final completion is journaled); create(stream=True) is not journaled"
            )
        call = owner._call("chat.completions.create", kwargs, chat_usage)
        live: list[Any] = []

        async def send(sent: dict[str, Any], meter: Meter) -> dict[str, Any]:
            live[:] = [await owner._quiet.chat.completions.create(**sent)]
            return wire_form(live[0])

        record = await call.run(send)
        return live[0] if live else ChatCompletion.construct(**record["body"])

    async def parse(self, **kwargs: Any) -> Any:
        """``chat.completions.parse``, journaled; ``ParsedChatCompletion`` on replay too."""
        owner = self._owner
        if not in_workflow():
            return await owner._client.chat.completions.parse(**kwargs)
        call = owner._call("chat.completions.parse", kwargs, chat_usage)

        async def send(sent: dict[str, Any], meter: Meter) -> dict[str, Any]:
            return wire_form(await owner._quiet.chat.completions.parse(**sent))

        record = await call.run(send)
        return _parsed_chat(record["body"], call.send_kwargs)

    def stream(self, **kwargs: Any) -> Any:
        """``chat.completions.stream``: events live, the final completion journaled."""
        owner = self._owner
        if not in_workflow():
            return owner._client.chat.completions.stream(**kwargs)
        kwargs.setdefault("stream_options", {"include_usage": True})  # to account tokens
        call = owner._call("chat.completions.stream", kwargs, chat_usage)
        sent_kwargs = call.send_kwargs

        async def final_body(stream: Any) -> dict[str, Any]:
            return wire_form(stream.current_completion_snapshot)

        def usage_so_far(stream: Any) -> dict[str, int] | None:
            try:
                snapshot = stream.current_completion_snapshot
            except AssertionError:
                return None
            return chat_usage({"usage": snapshot.usage.to_dict()}) if snapshot.usage else None

        def replay_events(final: Any) -> list[Any]:
            content = final.choices[0].message.content if final.choices else None
            if not content:
                return []
            event = {"type": "content.delta", "delta": content, "snapshot": content}
            return [ContentDeltaEvent.construct(**event)]

        spec = StreamSpec(
            open=lambda sent: owner._quiet.chat.completions.stream(**sent),
            final_body=final_body,
            usage_so_far=usage_so_far,
            rebuild=lambda record: _parsed_chat(record["body"], sent_kwargs),
            replay_events=replay_events,
            text_of=lambda e: e.delta if getattr(e, "type", "") == "content.delta" else None,
        )
        return ChatCompletionStream(call, spec)


class ChatCompletionStream(DurableStream):
    """A durable ``chat.completions.stream(...)``."""

    get_final_completion = final_method("get_final_completion")


class _Responses:
    def __init__(self, owner: DurableOpenAI) -> None:
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._owner._client.responses, name)

    async def create(self, **kwargs: Any) -> Any:
        """``responses.create``, journaled (``stream=True``: use ``.stream()``)."""
        owner = self._owner
        if not in_workflow():
            return await owner._client.responses.create(**kwargs)
        if kwargs.get("stream"):
            raise InvalidArgument(
                "a durable client streams with `async with client.responses.stream(...)` "
                "(its final response is journaled); create(stream=True) is not journaled"
            )
        call = owner._call("responses.create", kwargs, responses_usage)
        live: list[Any] = []

        async def send(sent: dict[str, Any], meter: Meter) -> dict[str, Any]:
            live[:] = [await owner._quiet.responses.create(**sent)]
            return wire_form(live[0])

        record = await call.run(send)
        return live[0] if live else Response.construct(**record["body"])

    def stream(self, **kwargs: Any) -> Any:
        """``responses.stream``: events live, the final response journaled."""
        owner = self._owner
        if not in_workflow():
            return owner._client.responses.stream(**kwargs)
        call = owner._call("responses.stream", kwargs, responses_usage)
        sent_kwargs = call.send_kwargs

        async def final_body(stream: Any) -> dict[str, Any]:
            return wire_form(await stream.get_final_response())

        def usage_so_far(stream: Any) -> dict[str, int] | None:
            return None  # the Responses API reports usage with its last event only

        def replay_events(final: Any) -> list[Any]:
            events: list[Any] = []
            for out_index, item in enumerate(final.output or []):
                if item.type != "message":
                    continue
                for content_index, part in enumerate(item.content or []):
                    if part.type == "output_text" and part.text:
                        events.append(
                            ResponseTextDeltaEvent.construct(
                                type="response.output_text.delta",
                                delta=part.text,
                                snapshot=part.text,
                                item_id=item.id,
                                output_index=out_index,
                                content_index=content_index,
                                sequence_number=len(events),
                                logprobs=[],
                            )
                        )
            return events

        def text_of(event: Any) -> str | None:
            if getattr(event, "type", "") == "response.output_text.delta":
                return str(event.delta)
            return None

        spec = StreamSpec(
            open=lambda sent: owner._quiet.responses.stream(**sent),
            final_body=final_body,
            usage_so_far=usage_so_far,
            rebuild=lambda record: _parsed_response(record["body"], sent_kwargs),
            replay_events=replay_events,
            text_of=text_of,
        )
        return ResponseStream(call, spec)


class ResponseStream(DurableStream):
    """A durable ``responses.stream(...)``."""

    get_final_response = final_method("get_final_response")
