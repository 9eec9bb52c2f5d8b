"""Encodes and decodes values nested MAX_DEPTH and MAX_DEPTH + 1 levels deep; run by
test_codec_depth.py in a subprocess, so that a crash (a C stack overflow is a SIGSEGV, not an
exception) fails the test instead of killing pytest.

Prints one JSON object: for each kind of nesting, what happened at the limit and past it.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Callable
from typing import Any, NamedTuple

import pydantic

from undying.codec import MAX_DEPTH, Codec
from undying.errors import SerializationError

codec = Codec()


@dataclasses.dataclass
class Turn:
    text: str
    prev: Any = None


class Node(pydantic.BaseModel):
    text: str
    prev: Any = None


class Link(NamedTuple):
    prev: Any
    n: int = 0


class Mood(enum.Enum):
    CALM = "calm"


WRAPS: list[Callable[[Any], Any]] = [
    lambda v: [v],
    lambda v: {"k": v},
    lambda v: (v,),
    lambda v: Turn("t", v),
    lambda v: Node(text="t", prev=v),
    lambda v: Link(v),
]

KINDS: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    # kind: (the innermost value, one container deep; how to wrap it one level deeper)
    "lists": ([], WRAPS[0]),
    "lists around a leaf": ([0], WRAPS[0]),
    "dicts": ({}, WRAPS[1]),
    "tuples": ((), WRAPS[2]),
    "dataclass chain": (Turn("t"), WRAPS[3]),
    "pydantic chain": (Node(text="t"), WRAPS[4]),
    "named tuple chain": (Link(None), WRAPS[5]),
    "tuple keys": ((), lambda v: (v,)),
}


def build(kind: str, depth: int) -> Any:
    if kind == "mix":
        value: Any = Mood.CALM
        for level in range(depth - 1):
            value = WRAPS[level % len(WRAPS)](value)
        return value
    value, wrap = KINDS[kind]
    for _ in range(depth - 1):
        value = wrap(value)
    if kind == "tuple keys":  # the chain is a dict key: it must be hashable after decoding
        value = {value[0]: "key"}
    return value


def attempt(kind: str, depth: int) -> dict[str, Any]:
    value = build(kind, depth)
    try:
        data = codec.encode(value, root="result")
    except SerializationError as exc:
        return {"encoded": False, "error": str(exc)[:400], "path_length": len(exc.path)}
    decoded = codec.decode(data)
    # == on a 1,000-deep dataclass chain would recurse: compare re-encodings instead.
    return {
        "encoded": True,
        "same": codec.encode(decoded, root="result") == data,
        "type": type(decoded).__name__,
    }


def crafted() -> dict[str, str]:
    """Frames nested far deeper than any encoder writes: refused, never a crash."""
    import zlib

    import msgpack

    def frame(header: int, body: bytes) -> bytes:
        head = bytes((header,))
        return head + body + zlib.crc32(head + body).to_bytes(4, "little")


    tuple_tag = msgpack.packb(msgpack.ExtType(16, msgpack.packb([2])))
    results = {}
    for label, header, body in (
        ("plain arrays", 0x01, b"\x91" * 5000 + b"\x90"),
        ("tagged tuples", 0x03, (b"\x92" + tuple_tag) * 5000 + b"\x90"),
    ):
        try:
            codec.decode(frame(header, body))
            results[label] = "decoded"
        except SerializationError as exc:
            results[label] = f"refused: {exc}"[:200]
    return results


def main() -> None:
    report: dict[str, Any] = {"max_depth": MAX_DEPTH}
    for kind in [*KINDS, "mix"]:
        report[kind] = {
            "at the limit": attempt(kind, MAX_DEPTH),
            "past the limit": attempt(kind, MAX_DEPTH + 1),
        }
    report["2000 deep lists"] = attempt("lists", 2000)
    report["crafted"] = crafted()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
