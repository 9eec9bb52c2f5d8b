"""The messages of the growing-history agent, shared by every system that runs it.

One turn appends one ~1 KiB message to the history. The same bytes must reach undying and
each peer (bench/storage_growth.py, bench/peers/), so they live here, with no import of any
system under test: a peer's child process imports this module and nothing of undying's.

* ``text``: prose-like words, different every turn (compresses well, like chat text).
* ``hex``: 16 sha256 hex digests joined (1 KiB of high-entropy text that compresses ~2x,
  like ids, hashes or base64 in tool output).
* ``json``: a tool result as a JSON document (~1 KiB: records with ids, names, prices and
  tags), kept as a string, as tool calls return it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

Message = dict[str, object]


def text_message(turn: int) -> Message:
    words = " ".join(f"token{(turn * 131 + i * 7) % 5003}" for i in range(110))
    return {"role": "assistant" if turn % 2 else "user", "turn": turn, "content": words}


def hex_message(turn: int) -> Message:
    digests = (hashlib.sha256(f"{turn}:{i}".encode()).hexdigest() for i in range(16))
    return {"role": "assistant" if turn % 2 else "user", "turn": turn, "content": "".join(digests)}


def json_message(turn: int) -> Message:
    records = [
        {
            "id": turn * 12 + i,
            "name": f"item-{(turn * 37 + i * 11) % 997}",
            "price": round(((turn * 7919 + i * 104729) % 100000) / 100, 2),
            "in_stock": (turn + i) % 3 != 0,
            "tags": [f"tag{(turn + i * j) % 50}" for j in range(3)],
        }
        for i in range(10)
    ]
    document = json.dumps({"query": f"search {turn}", "results": records}, separators=(",", ":"))
    return {"role": "tool", "turn": turn, "content": document}


SHAPES: dict[str, Callable[[int], Message]] = {
    "text": text_message,
    "hex": hex_message,
    "json": json_message,
}


def message(shape: str, turn: int) -> Message:
    try:
        return SHAPES[shape](turn)
    except KeyError:
        raise SystemExit(f"unknown message shape {shape!r}; known: {sorted(SHAPES)}") from None


def distinct_bytes(shape: str, turns: int) -> int:
    """Bytes of the distinct data the history holds after ``turns`` turns (each message once)."""
    return sum(len(repr(message(shape, t))) for t in range(turns))
