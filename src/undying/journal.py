"""The replay cursor, and how errors are written to and read back from the journal.

Recovery loads a run's journal *metadata* first (one query: kind, name, status, digest, and
the payload only when it is small), then fetches large payloads lazily, in batches, as replay
reaches them. Entries are dropped as soon as replay consumes them. Memory therefore holds the
metadata of the whole journal (small: ~200 bytes an entry) plus one batch of large payloads,
never the payloads of the whole journal.
"""

from __future__ import annotations

import importlib
import itertools
import traceback
from collections.abc import Callable
from typing import Any

from .codec import Codec
from .errors import (
    EventTimeout,
    NonDeterminismError,
    RunQuarantined,
    SerializationError,
    StepFailed,
    StepInDoubt,
    WorkflowCancelled,
    WorkflowFailed,
)
from .payloads import REF_MARK, resolve
from .store.base import Entry, Store

REF_PREFIX = bytes([REF_MARK])

PAYLOAD_BATCH = 64


class JournalCursor:
    """Hands out recorded entries by sequence number during replay."""

    __slots__ = ("_entries", "_last_seq", "_run_id", "_store")

    def __init__(self, store: Store, run_id: str, entries: list[Entry]) -> None:
        self._store = store
        self._run_id = run_id
        self._entries = {e.seq: e for e in entries}
        self._last_seq = entries[-1].seq if entries else -1

    @classmethod
    async def load(cls, store: Store, run_id: str) -> JournalCursor:
        return cls(store, run_id, await store.load_journal_meta(run_id))

    @classmethod
    def empty(cls, store: Store, run_id: str) -> JournalCursor:
        return cls(store, run_id, [])

    def replaying(self, seq: int) -> bool:
        """Whether the journal holds entries at or after ``seq`` (old history ahead)."""
        return seq <= self._last_seq

    def take(self, seq: int) -> Entry | None:
        """The recorded entry at ``seq``, removed from the cursor (None if not recorded)."""
        if not self._entries:
            return None
        return self._entries.pop(seq, None)

    def peek(self, seq: int) -> Entry | None:
        return self._entries.get(seq)

    async def payload(self, entry: Entry) -> bytes | None:
        """The entry's payload, fetching it (and those of the next deferred entries) if needed."""
        if not entry.deferred:
            if entry.payload is not None and entry.payload[:1] == REF_PREFIX:
                entry.payload = await resolve(self._store, entry.payload)
            return entry.payload
        # Entries are kept in journal order and dropped once consumed, so the next deferred
        # ones are at the front of the dict.
        ahead = (e.seq for e in self._entries.values() if e.deferred and e.seq > entry.seq)
        wanted = [entry.seq, *itertools.islice(ahead, PAYLOAD_BATCH - 1)]
        fetched = await self._store.load_payloads(self._run_id, wanted)
        for seq, data in fetched.items():
            target = entry if seq == entry.seq else self._entries.get(seq)
            if target is not None:
                target.payload = data
                target.deferred = False
        if entry.deferred:
            raise SerializationError(
                f"journal entry {entry.seq} of run {self._run_id!r} lost its payload"
            )
        if entry.payload is not None and entry.payload[:1] == REF_PREFIX:
            entry.payload = await resolve(self._store, entry.payload)
        return entry.payload


def mismatch(seq: int, entry: Entry, kind: str, name: str) -> NonDeterminismError:
    return NonDeterminismError(
        f"replay diverged at journal position {seq}: the journal holds {entry.kind} "
        f"{entry.name!r}, but the workflow code now calls {kind} {name!r}. The code changed "
        "while this run was in flight: restore the old code path (use ctx.patched() to branch "
        "new code safely) or fork the run from an earlier step"
    )


# -- errors --------------------------------------------------------------------------------
def describe_error(exc: BaseException, codec: Codec, **extra: Any) -> bytes:
    """Encode an exception so it can be raised again, identically, on replay."""
    cls = type(exc)
    info: dict[str, Any] = {
        "type": f"{cls.__module__}:{cls.__qualname__}",
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc))[-4000:],
        **extra,
    }
    for attr in (
        "step_name",
        "error_type",
        "error_message",
        "attempts",
        "seq",
        "attempt",
        "idempotency_key",
        "run_id",
        "takeovers",
        "position",
    ):
        if hasattr(exc, attr) and isinstance(getattr(exc, attr), str | int):
            info.setdefault("attrs", {})[attr] = getattr(exc, attr)
    try:
        codec.encode(exc.args)
        info["args"] = exc.args
    except SerializationError:
        info["args"] = None
    return codec.encode(info)


def rebuild_error(info: dict[str, Any]) -> BaseException:
    """The exception an encoded error stands for (a ``WorkflowFailed`` if it can't be rebuilt)."""
    type_path: str = info.get("type", "")
    message: str = info.get("message", "")
    attrs: dict[str, Any] = info.get("attrs") or {}
    special: dict[str, Callable[[], BaseException]] = {
        "undying.errors:StepFailed": lambda: StepFailed(message, **_pick(attrs, StepFailed)),
        "undying.errors:StepInDoubt": lambda: StepInDoubt(message, **_pick(attrs, StepInDoubt)),
        "undying.errors:EventTimeout": lambda: EventTimeout(message),
        "undying.errors:WorkflowCancelled": lambda: WorkflowCancelled(message),
        "undying.errors:WorkflowFailed": lambda: WorkflowFailed(
            message, **_pick(attrs, WorkflowFailed)
        ),
        "undying.errors:RunQuarantined": lambda: RunQuarantined(
            message, **_pick(attrs, RunQuarantined)
        ),
    }
    if type_path in special:
        return special[type_path]()
    module_name, _, qualname = type_path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        args = info.get("args")
        if isinstance(obj, type) and issubclass(obj, BaseException) and args is not None:
            exc: BaseException = obj(*args)
            return exc
    except Exception:
        pass
    return WorkflowFailed(error_type=type_path.replace(":", "."), error_message=message)


def _pick(attrs: dict[str, Any], cls: type) -> dict[str, Any]:
    allowed = {
        StepFailed: ("step_name", "error_type", "error_message", "attempts"),
        StepInDoubt: ("step_name", "seq", "attempt", "idempotency_key"),
        WorkflowFailed: ("error_type", "error_message"),
        RunQuarantined: ("run_id", "takeovers", "position"),
    }[cls]
    return {k: v for k, v in attrs.items() if k in allowed}


def step_failure(info: dict[str, Any], step_name: str) -> BaseException:
    """What the workflow sees for a step recorded as failed: StepFailed (or StepInDoubt),
    with the original exception chained when it can be rebuilt."""
    if info.get("in_doubt") or info.get("as_is"):
        return rebuild_error(info)  # raised as it was, not wrapped in StepFailed
    original = rebuild_error(info)
    error_type = info.get("type", "").replace(":", ".")
    failed = StepFailed(
        step_name=step_name,
        error_type=error_type,
        error_message=info.get("message", ""),
        attempts=int(info.get("attempts", 1)),
    )
    if not isinstance(original, WorkflowFailed):
        failed.__cause__ = original
    return failed


def type_path(exc: BaseException) -> str:
    """``module:qualname`` of an exception's class, as errors are recorded."""
    return f"{type(exc).__module__}:{type(exc).__qualname__}"
