"""The messages of the growing-history agent, shared by every system that runs it.

One turn appends one ~1 KiB message to the history. The same bytes must reach undying and
each peer (bench/storage_growth.py, bench/peers/), so they live here, with no import of any
system under test: a peer's child process imports this module and nothing of undying's.

* ``text``: prose-like words, different every turn (compresses well, like chat text).
* ``hex``: 16 sha256 hex digests joined (1 KiB of high-entropy text that compresses ~2x,
  like ids, hashes or base64 in tool output).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

Message = dict[str, object]


def text_message(turn: int) -> Message:
    words = " ".join(f"token{(turn * 131 + i * 7) % 5003}" for i in range(110))
    return {"role": "assistant" if turn % 2 else "user", "turn": turn, "content": words}


def hex_message(turn: int) -> Message:
    digests = (hashlib.sha256(f"{turn}:{i}".encode()).hexdigest() for i in range(16))
    return {"role": "assistant" if turn % 2 else "user", "turn": turn, "content": "".join(digests)}


SHAPES: dict[str, Callable[[int], Message]] = {"text": text_message, "hex": hex_message}


def message(shape: str, turn: int) -> Message:
    try:
        return SHAPES[shape](turn)
    except KeyError:
        raise SystemExit(f"unknown message shape {shape!r}; known: {sorted(SHAPES)}") from None


def distinct_bytes(shape: str, turns: int) -> int:
    """Bytes of the distinct data the history holds after ``turns`` turns (each message once)."""
    return sum(len(repr(message(shape, t))) for t in range(turns))
