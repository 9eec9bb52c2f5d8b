"""Strict mode: catch raw clock, random and uuid calls made by workflow code.

Workflow code is re-executed on recovery, so a raw ``time.time()`` or ``random.random()`` in it
takes a different value on replay and the run silently diverges. In strict mode the usual
sources of non-determinism are wrapped; a wrapper raises ``NonDeterminismError`` only when all
of these hold:

* a workflow of a strict app is running in this task and no step is (steps may do anything);
* the *immediate caller* is the application's own code, not the standard library, an installed
  package or undying: ``logging`` and ``asyncio`` read the clock legitimately.

``datetime.datetime`` is a C type whose methods cannot be replaced, so for it the workflow's
module globals are pointed at a subclass with guarded ``now``/``utcnow``/``today``.
"""

from __future__ import annotations

import datetime as _dt
import os
import random
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from .errors import NonDeterminismError
from .scope import current_run

_REPLACEMENT = {
    "time.time": "ctx.now()",
    "time.time_ns": "ctx.now()",
    "datetime.now": "ctx.now()",
    "datetime.utcnow": "ctx.now()",
    "datetime.today": "ctx.now()",
    "date.today": "ctx.now().date()",
    "uuid.uuid1": "ctx.uuid4()",
    "uuid.uuid4": "ctx.uuid4()",
    "os.urandom": "ctx.random() (or do it inside a step)",
}
_RANDOM_FUNCS = (
    "random",
    "randint",
    "randrange",
    "choice",
    "choices",
    "shuffle",
    "sample",
    "uniform",
    "gauss",
    "getrandbits",
    "randbytes",
    "betavariate",
    "expovariate",
    "normalvariate",
    "triangular",
)

_installed = False
_originals: dict[str, tuple[Any, str, Any]] = {}
_library_roots: tuple[str, ...] = ()
_file_is_app: dict[str, bool] = {}

#: The undying package's own directory: its calls are never the workflow's.
_UNDYING_DIR = os.path.dirname(os.path.abspath(__file__))


def _caller_is_app_code(filename: str) -> bool:
    verdict = _file_is_app.get(filename)
    if verdict is None:
        path = os.path.abspath(filename) if not filename.startswith("<") else filename
        verdict = not (
            path.startswith("<frozen")
            or path.startswith(_library_roots)
            or path.startswith(_UNDYING_DIR)
        )
        _file_is_app[filename] = verdict
    return verdict


def check(what: str) -> None:
    """Raise if workflow code of a strict app is calling ``what`` directly."""
    ctx = current_run.get()
    if ctx is None or not ctx.strict:
        return
    frame = sys._getframe(2)
    if _caller_is_app_code(frame.f_code.co_filename):
        raise NonDeterminismError(
            f"{what}() called from workflow code ({frame.f_code.co_filename}:{frame.f_lineno}) "
            "returns a different value when the run is replayed; use "
            f"{_REPLACEMENT.get(what, 'ctx.random()')} "
            "instead, or move the call into a step"
        )


def _guard(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if current_run.get() is not None:
            check(label)
        return fn(*args, **kwargs)

    guarded.__name__ = getattr(fn, "__name__", label)
    guarded.__doc__ = getattr(fn, "__doc__", None)
    guarded.__wrapped__ = fn  # type: ignore[attr-defined]
    return guarded


class _DatetimeMeta(type):
    """Keeps ``isinstance(x, datetime)`` true for ordinary datetimes in workflow modules."""

    def __instancecheck__(cls, obj: object) -> bool:
        base = _dt.datetime if cls.__name__ == "_GuardedDatetime" else _dt.date
        return isinstance(obj, base)


class _GuardedDatetime(_dt.datetime, metaclass=_DatetimeMeta):
    """``datetime.datetime`` whose clock reads are checked (used in workflow module globals)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _dt.datetime:  # type: ignore[misc]
        return _dt.datetime(*args, **kwargs)  # instances stay plain datetimes

    @classmethod
    def now(cls, tz: _dt.tzinfo | None = None) -> _dt.datetime:  # type: ignore[override]
        check("datetime.now")
        return _dt.datetime.now(tz)

    @classmethod
    def utcnow(cls) -> _dt.datetime:  # type: ignore[override]
        check("datetime.utcnow")
        return _dt.datetime.now(_dt.UTC).replace(tzinfo=None)

    @classmethod
    def today(cls) -> _dt.datetime:  # type: ignore[override]
        check("datetime.today")
        return _dt.datetime.today()


class _GuardedDate(_dt.date, metaclass=_DatetimeMeta):
    def __new__(cls, *args: Any, **kwargs: Any) -> _dt.date:  # type: ignore[misc]
        return _dt.date(*args, **kwargs)

    @classmethod
    def today(cls) -> _dt.date:  # type: ignore[override]
        check("date.today")
        return _dt.date.today()


class _DatetimeModuleProxy:
    """Stands for the ``datetime`` module in a workflow's globals."""

    datetime = _GuardedDatetime
    date = _GuardedDate

    def __getattr__(self, name: str) -> Any:
        return getattr(_dt, name)


_DT_PROXY = _DatetimeModuleProxy()


def install() -> None:
    """Wrap the module-level sources of non-determinism (idempotent, process-wide)."""
    global _installed, _library_roots
    if _installed:
        return
    import sysconfig

    paths = sysconfig.get_paths()
    roots = {paths.get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots |= {p for p in sys.path if "site-packages" in p or "dist-packages" in p}
    _library_roots = tuple(os.path.abspath(r) for r in roots if r)
    targets: list[tuple[Any, str, str]] = [
        (time, "time", "time.time"),
        (time, "time_ns", "time.time_ns"),
        (uuid, "uuid1", "uuid.uuid1"),
        (uuid, "uuid4", "uuid.uuid4"),
        (os, "urandom", "os.urandom"),
    ]
    targets += [(random, name, f"random.{name}") for name in _RANDOM_FUNCS if hasattr(random, name)]
    for module, attr, label in targets:
        original = getattr(module, attr)
        _originals[label] = (module, attr, original)
        setattr(module, attr, _guard(label, original))
    _installed = True


def guard_module_globals(fn: Callable[..., Any]) -> None:
    """Point a workflow module's ``datetime``/``random`` names at guarded stand-ins."""
    install()
    module_globals: dict[str, Any] = getattr(fn, "__globals__", {})
    replacements: dict[int, Any] = {
        id(_dt.datetime): _GuardedDatetime,
        id(_dt.date): _GuardedDate,
        id(_dt): _DT_PROXY,
    }
    for label, (_, _, original) in _originals.items():
        replacements[id(original)] = getattr(_originals[label][0], _originals[label][1])
    for key, value in list(module_globals.items()):
        new = replacements.get(id(value))
        if new is not None:
            module_globals[key] = new


def original(label: str) -> Callable[..., Any]:
    """The unwrapped function (undying's own clock and random reads use these)."""
    entry = _originals.get(label)
    return entry[2] if entry else _ORIGINAL_FALLBACK[label]


_ORIGINAL_FALLBACK: dict[str, Callable[..., Any]] = {
    "time.time": time.time,
    "uuid.uuid4": uuid.uuid4,
    "random.random": random.random,
}
