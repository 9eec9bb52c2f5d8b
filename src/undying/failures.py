"""How errors are written to the journal and raised again from it.

A failed step, a timed-out wait and a run's own error are recorded as encoded descriptions
(type, message, traceback, args, the encodable part of the instance's ``__dict__``), so that
replay raises, at the same call, an exception equal to the one the first execution raised, in
any process, without importing anything the database names.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable
from typing import Any

from . import known_types
from .codec import Codec
from .errors import (
    EventTimeout,
    RunQuarantined,
    SerializationError,
    StepFailed,
    StepInDoubt,
    WorkflowCancelled,
    WorkflowFailed,
)


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
        "run_id",
        "takeovers",
        "position",
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
        "undying.errors:WorkflowFailed": lambda: WorkflowFailed(
            message, **_pick(attrs, WorkflowFailed)
        ),
        "undying.errors:RunQuarantined": lambda: RunQuarantined(
            message, **_pick(attrs, RunQuarantined)
        ),
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
    """``module:qualname`` of an exception's class, as errors are recorded (``__main__`` under
    the name a worker imports the script by)."""
    return known_types.class_ref(type(exc))
