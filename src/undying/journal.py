"""The replay cursor, and how errors are written to and read back from the journal.

Recovery loads a run's journal *metadata* first (one query: kind, name, status, digest, and
the payload only when it is small), then fetches large payloads lazily, in batches, as replay
reaches them. Entries are dropped as soon as replay consumes them. Memory therefore holds the
metadata of the whole journal (small: ~200 bytes an entry) plus one batch of large payloads,
never the payloads of the whole journal.
"""

from __future__ import annotations

import contextlib
import itertools
import traceback
from collections.abc import Callable
from typing import Any

from . import known_types
from .codec import Codec
from .errors import (
    EventTimeout,
    NonDeterminismError,
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
    """Encode an exception so it can be raised again, identically, on replay.

    Records its class, message, ``args``, the part of its ``__dict__`` the codec can encode
    (an SDK error's ``body`` and ``status_code``, not its live ``response``) and its traceback.
    The class becomes known in this process, so the error can be rebuilt here.
    """
    cls = type(exc)
    known_types.encoding_ref(cls)
    info: dict[str, Any] = {
        "type": type_path(exc),
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
    ):
        if hasattr(exc, attr) and isinstance(getattr(exc, attr), str | int):
            info.setdefault("attrs", {})[attr] = getattr(exc, attr)
    info["args"] = exc.args if _encodes(exc.args, codec) else None
    info["state"] = {name: value for name, value in vars(exc).items() if _encodes(value, codec)}
    try:
        return codec.encode(info)
    except SerializationError:  # each part encodes alone, but not together (too deep, say)
        info["args"] = info["state"] = None
        return codec.encode(info)


def _encodes(value: Any, codec: Codec) -> bool:
    try:
        codec.encode(value)
    except SerializationError:
        return False
    return True


def rebuild_error(info: dict[str, Any]) -> BaseException:
    """The exception an encoded error stands for, or a ``WorkflowFailed`` carrying its recorded
    type and message when it cannot be rebuilt.

    Only ordinary ``Exception`` subclasses known in this process are rebuilt (see
    :mod:`undying.known_types`): never a ``SystemExit`` or another ``BaseException``, which would
    end the caller's process or loop, and never by importing a module the payload names. The
    class's ``__init__`` is not called (SDK errors take keyword-only arguments the journal cannot
    hold): ``args`` and the recorded ``__dict__`` are restored, and the recorded traceback is
    added as a note.
    """
    type_path: str = info.get("type", "")
    message: str = info.get("message", "")
    attrs: dict[str, Any] = info.get("attrs") or {}
    special: dict[str, Callable[[], BaseException]] = {
        "undying.errors:StepFailed": lambda: StepFailed(message, **_pick(attrs, StepFailed)),
        "undying.errors:StepInDoubt": lambda: StepInDoubt(message, **_pick(attrs, StepInDoubt)),
        "undying.errors:EventTimeout": lambda: EventTimeout(message),
        "undying.errors:WorkflowCancelled": lambda: WorkflowCancelled(message),
    }
    if type_path in special:
        return special[type_path]()
    cls = known_types.lookup(type_path) if isinstance(type_path, str) else None
    args = info.get("args")
    if cls is not None and issubclass(cls, Exception) and isinstance(args, list | tuple):
        exc = _rebuilt(cls, tuple(args), recorded_state="state" in info)
        if exc is not None:
            state = info.get("state")
            if isinstance(state, dict):
                exc.__dict__.update(state)
            recorded = info.get("traceback")
            if isinstance(recorded, str) and recorded:
                exc.add_note(f"recorded traceback:\n{recorded.rstrip()}")
            return exc
    return WorkflowFailed(error_type=str(type_path).replace(":", "."), error_message=message)


def _rebuilt(cls: type[Exception], args: tuple[Any, ...], recorded_state: bool) -> Exception | None:
    """An instance of ``cls`` holding ``args``, made without running ``__init__``.

    Errors recorded before their ``__dict__`` was (no ``state``) are rebuilt by calling the class,
    as they always were: ``__init__`` is what restores their attributes."""
    if not recorded_state:
        with contextlib.suppress(Exception):
            return cls(*args)
    for attempt in (args, ()):
        try:
            exc = cls.__new__(cls, *attempt)
        except Exception:
            continue
        if isinstance(exc, cls):
            exc.args = args
            return exc
    return None


def _pick(attrs: dict[str, Any], cls: type) -> dict[str, Any]:
    allowed = {
        StepFailed: ("step_name", "error_type", "error_message", "attempts"),
        StepInDoubt: ("step_name", "seq", "attempt", "idempotency_key"),
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
    """``module:qualname`` of an exception's class, as errors are recorded (``__main__`` under
    the name a worker imports the script by)."""
    return known_types.class_ref(type(exc))
