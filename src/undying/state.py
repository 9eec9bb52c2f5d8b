"""``ctx.state``: an agent's working memory, addressable key by key.

Instead of one blob re-saved every turn, each key is its own journal entry (kind ``state``,
named by the key), written with the run's next write like any recorded value. A read loads
just that key, the latest write before the current journal position, so replay sees exactly
what the original execution saw. Large values are chunked like any payload, so a key that
grows (a message list, a scratchpad) stores only what changed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import InvalidArgument
from .payloads import resolve
from .store.base import OK, Entry

if TYPE_CHECKING:
    from .context import Context

_MISSING = object()  # not in the cache: ask the store
_ABSENT = object()  # known to have no value (never set, or deleted)


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key or len(key) > 200:
        raise InvalidArgument(
            f"a state key must be a non-empty string of at most 200 characters, not {key!r}"
        )
    return key


class RunState:
    """Durable per-run key/value state; see the module docstring."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._cache: dict[str, Any] = {}

    async def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` (``default`` if never set or deleted). Loads only that key."""
        _check_key(key)
        value = self._cache.get(key, _MISSING)
        if value is _MISSING:
            ctx = self._ctx
            payload = await ctx._store.load_state(ctx.run_id, key, ctx._seq)
            value = _ABSENT if payload is None else ctx._decode(await resolve(ctx._store, payload))
            self._cache[key] = value
        return default if value is _ABSENT else value

    def set(self, key: str, value: Any) -> None:
        """Set ``key``; journaled with the run's next write (durable before any later step)."""
        self._write(_check_key(key), value, self._ctx._codec.encode(value, root=f"state[{key!r}]"))

    def delete(self, key: str) -> None:
        """Forget ``key``; later reads return their default."""
        self._write(_check_key(key), _ABSENT, None)

    def _write(self, key: str, value: Any, payload: bytes | None) -> None:
        ctx = self._ctx
        seq = ctx._next()
        entry = ctx._cursor.take(seq)
        if entry is not None:
            ctx._check(seq, entry, "state", key)
        else:
            ctx._raise_if_cancelled()
            now = time.time()
            ctx._pending.append(Entry(seq, "state", key, OK, payload, None, 1, now, now))
        self._cache[key] = value

    def cached(self) -> Iterator[tuple[str, Any]]:
        """The keys this execution has touched so far, with their values."""
        return ((k, v) for k, v in self._cache.items() if v is not _ABSENT)
