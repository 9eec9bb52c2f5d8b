"""Reading the container ext types of frames written before tags (by undying 0.1.0).

Those frames (headers ``0x01``/``0x02``) stored a tuple, set, frozenset, enum, dataclass, named
tuple or pydantic model as an ext type holding its own packed msgpack, so decoding one calls
``unpackb`` again from inside the ext hook. Each such level costs ~40 KB of C stack (measured:
32 levels need 1.3 MB, 64 levels 2.6 MB), and 200 levels overflowed the main thread's 8 MB and
killed the process. Journals are kept forever, so these frames must still be read, but nesting
beyond :data:`MAX_NESTING` is refused with a SerializationError, far from the limit.

Pydantic models of that format were stored as ``model_dump()`` output and are validated again
when read, as they always were.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any, Final

import msgpack

from . import known_types
from .codec_classes import (
    Kind,
    dataclass_builder,
    is_namedtuple_class,
    known_class,
)
from .errors import SerializationError

MAX_NESTING: Final = 32
"""Old container ext types nested deeper than this are refused (~1.3 MB of C stack)."""

CODES: Final = frozenset(
    (Kind.TUPLE, Kind.SET, Kind.FROZENSET, Kind.ENUM, Kind.DATACLASS, Kind.PYDANTIC,
     Kind.NAMEDTUPLE)
)  # fmt: skip
"""The ext codes of old containers (the tag kinds reuse the same numbers)."""

LeafHook = Callable[[int, bytes], Any]


def load(code: int, data: bytes, leaf: LeafHook, depth: int = 1) -> Any:
    """Decode old container ext ``code``; ``leaf`` decodes every other ext code."""
    if depth > MAX_NESTING:
        raise SerializationError(
            f"stored payload nests tuples, sets, enums, dataclasses, named tuples or pydantic "
            f"models more than {MAX_NESTING} levels inside each other in the format of undying "
            f"0.1.0, which cannot be read that deep without risking the process's C stack"
        )

    def hook(inner: int, inner_data: bytes) -> Any:
        if inner in CODES:
            return load(inner, inner_data, leaf, depth + 1)
        return leaf(inner, inner_data)

    state = msgpack.unpackb(data, ext_hook=hook, raw=False, strict_map_key=False)
    if code == Kind.TUPLE:
        return tuple(state)
    if code == Kind.SET:
        return set(state)
    if code == Kind.FROZENSET:
        return frozenset(state)
    module, qualname, inner_state = state
    ref = f"{module}:{qualname}"
    if code == Kind.ENUM:
        cls = known_class(ref, "enum", lambda c: issubclass(c, enum.Enum))
        try:
            return cls(inner_state)
        except ValueError as exc:
            raise SerializationError(f"stored enum value no longer exists: {exc}") from None
    if code == Kind.DATACLASS:
        cls = known_class(ref, "dataclass", lambda c: dataclasses.is_dataclass(c))
        names = list(inner_state)
        return dataclass_builder(cls, names, ref)([None, *inner_state.values()])
    if code == Kind.NAMEDTUPLE:
        cls = known_class(ref, "named tuple", is_namedtuple_class)
        try:
            return cls._make(inner_state)
        except TypeError as exc:
            raise SerializationError(f"stored {module}.{qualname} does not fit: {exc}") from None
    return _pydantic(ref, inner_state)


def _pydantic(ref: str, state: Any) -> Any:
    cls = known_class(ref, "pydantic model", known_types.is_pydantic_class)
    try:
        return cls.model_validate(state)
    except ValueError as exc:  # pydantic.ValidationError
        name = ref.replace(":", ".", 1)
        raise SerializationError(f"stored {name} no longer validates: {exc}") from None
