"""How errors are written to the journal and raised again from it.

A failed step, a timed-out wait and a run's own error are recorded as encoded descriptions
(type, message, traceback, the attributes that matter), so that replay raises, at the same
call, an exception equal to the one the first execution raised, in any process.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable
from typing import Any

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
