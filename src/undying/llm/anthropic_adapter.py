"""``anthropic.AsyncAnthropic``, durable: messages (create, parse, stream) as journaled steps;
every other attribute is the client's own.

Replay rebuilds ``Message`` / ``ParsedMessage`` from the journaled wire form the way the SDK
builds them (``construct``, no validation); structured output (``output_format``) is parsed
again with the SDK's own function and the format the code passes.
"""

from __future__ import annotations

from typing import Any

from anthropic.lib._parse._response import parse_response, parse_text
from anthropic.lib.streaming import TextEvent
from anthropic.types import Message
from anthropic.types.parsed_message import ParsedMessage

from ..steps import in_workflow
from .calls import CallPolicy, Meter, ModelCall, wire_form
from .streaming import DurableStream, StreamSpec, final_method

PROVIDER = "anthropic"


def messages_usage(body: dict[str, Any]) -> dict[str, int] | None:
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    cached = int(usage.get("cache_read_input_tokens") or 0)
    written = int(usage.get("cache_creation_input_tokens") or 0)
    return {
        # Anthropic counts cache reads and writes apart from input_tokens; undying's
        # input_tokens is everything sent, cached_tokens the part served from the cache.
        "input": int(usage.get("input_tokens") or 0) + cached + written,
        "output": int(usage.get("output_tokens") or 0),
        "cached": cached,
    }


def _not_given() -> Any:
    from anthropic import NOT_GIVEN

    return NOT_GIVEN


def _final_message(body: dict[str, Any], kwargs: dict[str, Any]) -> Any:
    """What the SDK's stream helper returns: a ``ParsedMessage``."""
    message = ParsedMessage.construct(**body)
    output_format = kwargs.get("output_format", _not_given())
    if output_format is not _not_given():
        for block in message.content:
            if block.type == "text":
                block.parsed_output = parse_text(block.text, output_format)
    return message


class DurableAnthropic:
    """What ``undying.llm.durable(anthropic.AsyncAnthropic(...))`` returns."""

    __undying_durable__ = True

    def __init__(self, client: Any, policy: CallPolicy) -> None:
        self._client = client
        self._quiet = client.with_options(max_retries=0)  # one retry layer: the step's
        self._policy = policy
        self.messages = _Messages(self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def __repr__(self) -> str:
        return f"<undying durable {self._client!r}>"


class _Messages:
    def __init__(self, owner: DurableAnthropic) -> None:
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._owner._client.messages, name)

    def _call(self, endpoint: str, kwargs: dict[str, Any]) -> ModelCall:
        owner = self._owner
        return ModelCall(PROVIDER, f"anthropic.{endpoint}", owner._policy, kwargs, messages_usage)

    async def create(self, **kwargs: Any) -> Any:
        """``messages.create``, journaled (``stream=True``: use ``.stream()``)."""
        owner = self._owner
        if not in_workflow():
            return await owner._client.messages.create(**kwargs)
        if kwargs.get("stream"):
            from ..errors import InvalidArgument

            raise InvalidArgument(
                "a durable client streams with `async with client.messages.stream(...)` "
                "(its final message is journaled); create(stream=True) is not journaled"
            )
        call = self._call("messages.create", kwargs)
        live: list[Any] = []

        async def send(sent: dict[str, Any], meter: Meter) -> dict[str, Any]:
            live[:] = [await owner._quiet.messages.create(**sent)]
            return wire_form(live[0])

        record = await call.run(send)
        return live[0] if live else Message.construct(**record["body"])

    async def parse(self, **kwargs: Any) -> Any:
        """``messages.parse``, journaled; ``ParsedMessage`` on replay too."""
        owner = self._owner
        if not in_workflow():
            return await owner._client.messages.parse(**kwargs)
        call = self._call("messages.parse", kwargs)

        async def send(sent: dict[str, Any], meter: Meter) -> dict[str, Any]:
            return wire_form(await owner._quiet.messages.parse(**sent))

        record = await call.run(send)
        return parse_response(
            output_format=call.send_kwargs.get("output_format", _not_given()),
            response=Message.construct(**record["body"]),
        )

    def stream(self, **kwargs: Any) -> Any:
        """``messages.stream``: events live (``text_stream`` too), the final message
        journaled."""
        owner = self._owner
        if not in_workflow():
            return owner._client.messages.stream(**kwargs)
        call = self._call("messages.stream", kwargs)
        sent_kwargs = call.send_kwargs

        async def final_body(stream: Any) -> dict[str, Any]:
            return wire_form(stream.current_message_snapshot)

        def usage_so_far(stream: Any) -> dict[str, int] | None:
            try:
                snapshot = stream.current_message_snapshot
            except AssertionError:
                return None
            return messages_usage({"usage": snapshot.usage.to_dict()})

        def replay_events(final: Any) -> list[Any]:
            return [
                TextEvent.construct(type="text", text=block.text, snapshot=block.text)
                for block in final.content
                if block.type == "text" and block.text
            ]

        spec = StreamSpec(
            open=lambda sent: owner._quiet.messages.stream(**sent),
            final_body=final_body,
            usage_so_far=usage_so_far,
            rebuild=lambda record: _final_message(record["body"], sent_kwargs),
            replay_events=replay_events,
            text_of=lambda e: e.text if getattr(e, "type", "") == "text" else None,
        )
        return MessageStream(call, spec)


class MessageStream(DurableStream):
    """A durable ``messages.stream(...)``."""

    get_final_message = final_method("get_final_message")

    async def get_final_text(self) -> str:
        """The final message's text blocks, joined (as the SDK's helper)."""
        message = await self._final_object()
        texts = [block.text for block in message.content if block.type == "text"]
        if not texts:
            raise RuntimeError(
                "get_final_text() needs a text content block; the message holds "
                + ", ".join(block.type for block in message.content)
            )
        return "".join(texts)
