"""The classes a stored payload or error may name, and stable names for code run as a script.

Payloads record enums, dataclasses, named tuples, pydantic models and exceptions by name,
``"module:qualname"``. Reading one back must never import the module it names: whoever can write
to the database could name any importable module, and importing runs its code (a planted
``venv.__main__`` reference made a worker create virtualenvs and exit). So a name is resolved only
against classes the application has made known, in modules it has already imported:

* classes this process encoded (or whose exceptions it recorded);
* classes in the namespace of a module that defines a registered workflow or a decorated step,
  and classes reachable from those functions' type annotations (through generics, and through
  the fields of pydantic models and dataclasses);
* classes given to :func:`register_type`, and those reachable from their fields;
* the builtins and :mod:`undying.errors` (for exceptions).

Annotations are read lazily, the first time a name is not found, so decorating costs nothing at
import time.

A module run as a script is ``__main__`` in that process but is imported under its file name by
``undying worker script:app``; :func:`stable_module_name` gives the name it has in both, so
workflow and step names and class references agree between the two processes.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import enum
import importlib.machinery
import inspect
import os
import sys
import threading
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import InvalidArgument

__all__ = [
    "class_ref",
    "encoding_ref",
    "lookup",
    "register_function",
    "register_type",
    "stable_module_name",
]

T = TypeVar("T", bound=type)

_types: dict[str, type] = {}
"""``module:qualname`` -> class, for every class known so far."""
_refs: dict[type, str] = {}
"""class -> its reference, for classes accepted for encoding (found by name or registered)."""
_modules: dict[str, str] = {"builtins": "builtins", "undying.errors": "undying.errors"}
"""Known modules: the name payloads use -> the name in ``sys.modules`` (differs for __main__)."""
_unindexed: list[str] = ["builtins", "undying.errors"]
_pending: list[object] = []
"""Functions and classes whose annotations have not been read yet."""
_lock = threading.Lock()

_main_name: list[str | None] = []  # computed once: a script's module name does not change


def stable_module_name(module: str) -> str | None:
    """The name ``module`` can be imported under by another process (None if there is none).

    Only ``__main__`` differs from its own name: it is ``__main__.__spec__.name`` when run with
    ``python -m``, else the script's file name when that file is importable as a top-level
    module from ``sys.path[0]`` (``python agent.py`` -> ``agent``), else None (``python -c``,
    a notebook, a script whose name is not an identifier).
    """
    if module != "__main__":
        return module
    if not _main_name:
        _main_name.append(_main_module_name())
    return _main_name[0]


def _main_module_name() -> str | None:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if isinstance(name, str) and name and name != "__main__":
        return name
    path = getattr(main, "__file__", None)
    if not isinstance(path, str) or not sys.path:
        return None
    stem, ext = os.path.splitext(os.path.basename(path))
    if ext != ".py" or not stem.isidentifier():
        return None
    found = importlib.machinery.PathFinder.find_spec(stem, [sys.path[0] or os.getcwd()])
    origin = getattr(found, "origin", None)
    try:
        return stem if origin is not None and os.path.samefile(origin, path) else None
    except OSError:  # the script was moved or deleted since it started
        return None


def qualified_name(obj: Any, *, strict: bool) -> str:
    """``module:qualname`` of a function or class, with ``__main__`` under its stable name.

    ``strict`` (registering a workflow or step) refuses ``__main__`` without a stable name: the
    name would be ``__main__:...`` here and something else in any worker.
    """
    module = getattr(obj, "__module__", None) or "?"
    qualname = getattr(obj, "__qualname__", None) or type(obj).__name__
    stable = stable_module_name(module)
    if stable is None:
        if strict:
            raise InvalidArgument(
                f"{qualname} is defined in __main__ (code run with `python -c`, in a notebook, "
                f"or in a script whose file name is not an importable module name), so it has "
                f"no name another process can find it by; pass name= explicitly"
            )
        stable = module
    return f"{stable}:{qualname}"


def class_ref(cls: type) -> str:
    """The name payloads record a class under."""
    return qualified_name(cls, strict=False)


def _find(module: str, qualname: str) -> Any:
    """The object at ``qualname`` in the already imported ``module``, or None.

    Reads namespaces directly (``vars``), so neither an import nor a module ``__getattr__``
    runs.
    """
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        try:
            obj = vars(obj).get(part)
        except TypeError:
            return None
        if obj is None:
            return None
    return obj


def _remember(cls: type, ref: str) -> None:
    _types[ref] = cls
    _refs[cls] = ref
    if cls.__module__ == "__main__":  # payloads written before __main__ had a stable name
        _types.setdefault(f"__main__:{cls.__qualname__}", cls)


def encoding_ref(cls: type) -> str | None:
    """The reference to record for ``cls``, or None if no process could find it by that name.

    A class is accepted if its module (already imported) holds it under its qualified name, or
    if it was registered; accepting it makes it known for decoding in this process.
    """
    ref = _refs.get(cls)
    if ref is not None:
        return ref
    qualname = cls.__qualname__
    if "<locals>" in qualname or _find(cls.__module__, qualname) is not cls:
        return None
    ref = class_ref(cls)
    _remember(cls, ref)
    return ref


def lookup(ref: str) -> type | None:
    """The known class recorded as ``ref``, or None. Never imports anything."""
    cls = _types.get(ref)
    if cls is None and (_pending or _unindexed):
        _drain()
        cls = _types.get(ref)
    if cls is None:
        module, _, qualname = ref.partition(":")
        real = _modules.get(module)
        found = None if real is None else _find(real, qualname)
        if isinstance(found, type) and class_ref(found) == ref:
            cls = found
            _types[ref] = found
    return cls


# -- registration ----------------------------------------------------------------------------------


def register_function(fn: Callable[..., Any]) -> None:
    """Make known the module of a workflow or step and the classes its annotations reach."""
    module = getattr(fn, "__module__", None)
    if isinstance(module, str):
        _add_module(module)
    _pending.append(fn)


def _add_module(module: str) -> None:
    names = {module, stable_module_name(module) or module}
    for name in names:
        if name not in _modules:
            _modules[name] = module
    if module not in _unindexed:
        _unindexed.append(module)


def _is_kind(cls: type) -> bool:
    """Whether payloads or errors can hold instances of ``cls`` by name."""
    try:
        if issubclass(cls, enum.Enum | Exception) or dataclasses.is_dataclass(cls):
            return True
        if issubclass(cls, tuple) and hasattr(cls, "_fields"):
            return True
        return is_pydantic_class(cls)
    except Exception:  # a class whose metaclass refuses issubclass, say
        return False


def is_pydantic_class(cls: type) -> bool:
    """Whether ``cls`` is a pydantic model, without importing pydantic (which may be absent)."""
    main = sys.modules.get("pydantic.main")
    base = None if main is None else getattr(main, "BaseModel", None)
    return base is not None and issubclass(cls, base)


def register_type(cls: T) -> T:
    """Let payloads and recorded errors that name ``cls`` be read back in this process.

    undying never imports a module named by stored data, so a class is only found if this
    process encoded one, defines workflows or steps in its module, mentions it in their type
    annotations, or registered it here. Takes an enum, dataclass, ``NamedTuple``, pydantic model
    or ``Exception`` subclass; the classes reachable from its fields are registered too. Returns
    ``cls``, so it works as a class decorator::

        @undying.register_type
        @dataclass
        class Turn:
            text: str
            prev: Turn | None = None
    """
    if not isinstance(cls, type):
        raise InvalidArgument(f"register_type needs a class, not {cls!r}")
    if issubclass(cls, BaseException) and not issubclass(cls, Exception):
        raise InvalidArgument(
            f"register_type refuses {cls.__qualname__}: only Exception subclasses are rebuilt "
            f"from the journal, never a BaseException such as SystemExit"
        )
    if not _is_kind(cls):
        raise InvalidArgument(
            f"register_type takes an enum, dataclass, NamedTuple, pydantic model or Exception "
            f"subclass; {cls.__module__}.{cls.__qualname__} is none of these"
        )
    if "<locals>" in cls.__qualname__:
        raise InvalidArgument(
            f"{cls.__qualname__} is defined inside a function, so its name is not unique; "
            f"define it at module level"
        )
    metadata = getattr(cls, "__pydantic_generic_metadata__", None) or {}
    if metadata.get("origin") is not None:  # Model[Arg]: payloads name Model and Arg
        _pending.append(cls)
        return cls
    _remember(cls, class_ref(cls))
    _pending.append(cls)
    return cls


def _drain() -> None:
    """Index the known modules' namespaces and read pending annotations and fields."""
    with _lock:
        pending = _pending[:]
        del _pending[:]
        while _unindexed:
            module = sys.modules.get(_unindexed.pop())
            for value in list(vars(module).values()) if module is not None else ():
                if isinstance(value, type) and _is_kind(value):
                    _types.setdefault(class_ref(value), value)
                    pending.append(value)  # and the classes its fields reach
    for obj in pending:
        _scan(obj)


def _scan(root: object) -> None:
    """Register every class reachable from ``root``'s annotations (iteratively)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        stack.extend(typing.get_args(item))
        origin = typing.get_origin(item)
        if origin is not None:
            stack.append(origin)
            continue
        if isinstance(item, type):
            metadata = getattr(item, "__pydantic_generic_metadata__", None) or {}
            if metadata.get("origin") is not None:
                stack.append(metadata["origin"])
                stack.extend(metadata.get("args", ()))
                continue
            if not _is_kind(item) or "<locals>" in item.__qualname__:
                continue
            _types.setdefault(class_ref(item), item)
            if is_pydantic_class(item):
                fields = getattr(item, "__pydantic_fields__", None) or {}
                stack.extend(field.annotation for field in fields.values())
            elif dataclasses.is_dataclass(item) or issubclass(item, tuple):
                stack.extend(_hints(item).values())
        elif callable(item):
            stack.extend(_hints(item).values())


def _hints(obj: Any) -> dict[str, Any]:
    """Evaluated annotations of ``obj``; one that cannot be evaluated is skipped, not fatal."""
    try:
        return typing.get_type_hints(obj)
    except Exception:
        pass
    try:
        raw = inspect.get_annotations(obj)
    except Exception:
        return {}
    hints: dict[str, Any] = {}
    namespace = getattr(sys.modules.get(getattr(obj, "__module__", "")), "__dict__", {})
    for name, value in raw.items():
        if isinstance(value, str):
            with contextlib.suppress(Exception):  # an import only under TYPE_CHECKING, say
                hints[name] = eval(value, dict(namespace), dict(vars(builtins)))
        else:
            hints[name] = value
    return hints
