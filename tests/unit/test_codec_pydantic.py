"""Pydantic models come back as they were stored: no validator runs again, nothing is re-aliased.

LLM SDKs build their responses with ``model_construct`` (no validation), so a stored response may
hold values its own model would refuse: a newer enum value, a missing field. Each test here failed
when models were stored as ``model_dump()`` and read back with ``model_validate``.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any, Generic, Literal, TypeVar

import msgpack
import pydantic
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

import undying
from undying import Context, codec_classes, known_types
from undying.codec import Codec
from undying.testing import temp_app, wait_for_status

codec = Codec()


def same_state(original: BaseModel, decoded: BaseModel) -> None:
    assert type(decoded) is type(original)
    assert decoded.__dict__ == original.__dict__
    assert decoded.model_fields_set == original.model_fields_set
    assert decoded.__pydantic_extra__ == original.__pydantic_extra__
    assert decoded.__pydantic_private__ == original.__pydantic_private__
    assert decoded.model_dump(by_alias=True, exclude_unset=True) == original.model_dump(
        by_alias=True, exclude_unset=True
    )


def round_trip(model: BaseModel) -> Any:
    decoded = codec.decode(codec.encode(model))
    same_state(model, decoded)
    return decoded


class Choice(BaseModel):
    index: int
    finish_reason: Literal["stop", "length"]


def test_a_model_built_without_validation_comes_back_as_it_was() -> None:
    newer = Choice.model_construct(index=0, finish_reason="new_value")  # a newer API value
    assert round_trip(newer).finish_reason == "new_value"
    missing = Choice.model_construct(finish_reason="stop")  # a server that omits a field
    assert not hasattr(round_trip(missing), "index")


class Shout(BaseModel):
    text: str

    @field_validator("text")
    @classmethod
    def exclaim(cls, value: str) -> str:
        return value + "!"


def test_validators_do_not_run_again() -> None:
    assert round_trip(Shout(text="a")).text == "a!"


class Secret(BaseModel):
    user: str
    token: str = Field(exclude=True)


def test_an_excluded_field_is_kept() -> None:
    assert round_trip(Secret(user="u", token="t")).token == "t"


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    schema_: dict[str, Any] = Field(alias="schema")
    async_: bool | None = Field(default=None, alias="async")


def test_aliased_fields_come_back_under_their_own_names() -> None:
    call = ToolCall.model_validate({"schema": {"type": "object"}, "async": True, "extra": 1})
    back = round_trip(call)
    assert back.schema_ == {"type": "object"} and back.async_ is True
    assert back.__pydantic_extra__ == {"extra": 1}  # "async_" did not move into the extras
    assert back.model_dump(by_alias=True, exclude_unset=True) == {
        "schema": {"type": "object"},
        "async": True,
        "extra": 1,
    }


class Cached(BaseModel):
    name: str
    _hits: int = PrivateAttr(default=0)


def test_private_attributes_and_fields_set() -> None:
    model = Cached(name="n")
    model._hits = 3
    assert round_trip(model)._hits == 3
    assert round_trip(Cached.model_construct(_fields_set={"name", "ghost"}, name="x"))


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)
    a: int


class Root(pydantic.RootModel[list[int]]):
    pass


def test_frozen_root_and_nested_models() -> None:
    assert codec.decode(codec.encode({Frozen(a=1): "key"})) == {Frozen(a=1): "key"}
    round_trip(Root([1, 2]))
    nested = codec.decode(codec.encode([Choice(index=1, finish_reason="stop"), Shout(text="x")]))
    assert [type(m) for m in nested] == [Choice, Shout]


class Later(BaseModel):
    index: int
    logprobs: list[float] = Field(default_factory=list)


def test_fields_added_since_get_their_defaults_and_removed_ones_are_dropped() -> None:
    undying.register_type(Later)
    tag = codec_classes.tag(
        codec_classes.Kind.PYDANTIC, known_types.class_ref(Later), ["index", "gone"]
    )
    body = msgpack.packb([tag, 0b11, None, None, 5, "removed field"])
    head = b"\x03"
    later = codec.decode(head + body + zlib.crc32(head + body).to_bytes(4, "little"))
    assert later.__dict__ == {"index": 5, "logprobs": []}
    assert later.model_fields_set == {"index", "gone"}


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    parsed: T | None = None


class Item(BaseModel):
    id: int


def test_a_parametrized_generic_model_round_trips() -> None:
    page = Page[Item](items=[Item(id=1)], parsed=Item(id=2))
    back = round_trip(page)
    assert type(back) is Page[Item]
    assert type(back.parsed) is Item
    assert type(codec.decode(codec.encode(Page[int](items=[1])))) is Page[int]


def test_a_generic_model_whose_argument_is_unknown_comes_back_as_its_origin() -> None:
    origin = codec_classes._parametrize(Page, ["no_such_module:Thing"])
    assert origin is Page


class Reply(BaseModel):
    text: str
    finish_reason: Literal["stop"]


def test_a_model_recorded_by_a_step_replays(db_path: str) -> None:
    calls: list[int] = []

    @undying.step
    async def call_model() -> Reply:
        calls.append(1)
        return Reply.model_construct(text="hi", finish_reason="content_filter")

    app = temp_app(db_path, suspend_after=0.05)

    @app.workflow()
    async def chat(ctx: Context) -> str:
        reply = await call_model()
        await ctx.wait_for_event("go")  # a long wait releases the run: it resumes by replay
        return f"{reply.text}:{reply.finish_reason}"

    async def main() -> Any:
        async with app:
            handle = await app.start(chat, run_id="c1")
            await wait_for_status(handle, "waiting")
            assert await handle.status() == "waiting"
            await app.send_event("c1", "go")
            return await handle.result(timeout=30)

    assert asyncio.run(main()) == "hi:content_filter"
    assert calls == [1]
