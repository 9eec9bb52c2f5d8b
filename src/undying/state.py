"""``ctx.state``: an agent's working memory, addressable key by key.

Instead of one blob re-saved every turn, each key is its own journal entry (kind ``state``,
named by the key), written with the run's next write like any recorded value. A read loads
just that key, the latest write before the current journal position, so replay sees exactly
what the original execution saw. Large values are chunked like any payload, so a key that
grows (a message list, a scratchpad) stores only what changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import InvalidArgument
from .payloads import resolve

if TYPE_CHECKING:
    from .journal import Recorder

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

    def __init__(self, recorder: Recorder) -> None:
        self._rec = recorder
        self._cache: dict[str, Any] = {}

    async def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` (``default`` if never set or deleted). Loads only that key."""
        _check_key(key)
        value = self._cache.get(key, _MISSING)
        if value is _MISSING:
            rec = self._rec
            payload = await rec.store.load_state(rec.run.run_id, key, rec.next_position)
            value = (
                _ABSENT if payload is None else rec.codec.decode(await resolve(rec.store, payload))
            )
            self._cache[key] = value
        return default if value is _ABSENT else value

    def set(self, key: str, value: Any) -> None:
        """Set ``key``; journaled with the run's next write (durable before any later step)."""
        self._write(_check_key(key), value, self._rec.codec.encode(value, root=f"state[{key!r}]"))

    def delete(self, key: str) -> None:
        """Forget ``key``; later reads return their default."""
        self._write(_check_key(key), _ABSENT, None)

    def _write(self, key: str, value: Any, payload: bytes | None) -> None:
        rec = self._rec
        seq = rec.position()
        if rec.recorded(seq, "state", key) is None:
            rec.buffer(seq, "state", key, payload)
        self._cache[key] = value

    def cached(self) -> Iterator[tuple[str, Any]]:
        """The keys this execution has touched so far, with their values."""
        return ((k, v) for k, v in self._cache.items() if v is not _ABSENT)
