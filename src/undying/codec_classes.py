"""How instances of application classes are written as tagged msgpack arrays, and rebuilt.

A tuple, set, frozenset, enum member, dataclass, named tuple or pydantic model is written as one
msgpack array whose first element is a *tag*: ext type :data:`TAG` holding a small plain msgpack
array ``[kind, class reference, ...]``. Its other elements are the instance's state, packed in the
same pass as everything else. So a value nested 200 levels deep is one msgpack structure 200
levels deep, decoded by one ``unpackb`` call whose ``list_hook`` turns tagged arrays into objects
from the innermost out, without recursion. (undying 0.1.0 wrote each as an ext type holding
separately packed bytes, decoded by a recursive ``unpackb`` that needs ~40 KB of C stack per
level: 200 levels killed the process. :mod:`undying.codec_legacy` still reads those.)

Everything a tag says that does not change from one instance to the next (the class, a
dataclass's field names) is in the tag, so equal tags are equal bytes and are resolved once
(:func:`resolve_tag` is cached by the caller).

Layouts (``T`` is the tag; kinds reuse the ext codes of the formats they replace)::

    tuple, set, frozenset   [T(kind)] + items           (sets sorted by each member's encoding)
    enum member             [T(11, ref), value]
    dataclass               [T(12, ref, [field names]), *field values]
    named tuple             [T(14, ref), *values]
    pydantic model          [T(13, ref, [__dict__ keys], type args?), fields_set, extra, private,
                             *__dict__ values]

A pydantic model is written as pydantic's own ``__getstate__`` shape and rebuilt without
validation: validators do not run twice, a model built with ``model_construct`` (as the LLM SDKs
build responses) comes back as it was, aliases play no part, excluded fields are kept.
``fields_set`` is a bit mask over the ``__dict__`` keys (a sorted list of names when it holds
others), ``extra`` and ``private`` are None when empty. A parametrized generic model
(``Page[Item]``) names its origin class and its type arguments.

Classes are found through :mod:`undying.known_types`, never imported. Dataclass and pydantic
fields added since a payload was written get their defaults; removed ones are dropped.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import operator
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgpack

from . import known_types
from .errors import SerializationError

TAG: Final = 16
"""The msgpack ext type code of a tag."""


class Kind:
    """Tag kinds. Stored in the journal forever: never renumber, only add."""

    TUPLE = 2
    SET = 3
    FROZENSET = 4
    ENUM = 11
    DATACLASS = 12
    PYDANTIC = 13
    NAMEDTUPLE = 14


class NotEncodable(Exception):
    """Raised inside the msgpack default hook; the codec turns it into a SerializationError."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Tag:
    """A decoded tag: what turns the array it heads into an object."""

    __slots__ = ("build",)

    def __init__(self, build: Callable[[list[Any]], Any]) -> None:
        self.build = build


def tag(kind: int, *meta: object) -> msgpack.ExtType:
    return msgpack.ExtType(TAG, msgpack.packb([kind, *meta]))


Encode = Callable[[Any], list[Any]]


# -- encoding --------------------------------------------------------------------------------------


def is_namedtuple_class(cls: type) -> bool:
    return issubclass(cls, tuple) and hasattr(cls, "_fields") and hasattr(cls, "_make")


_fields_cache: dict[type, tuple[dataclasses.Field[Any], ...]] = {}


def fields_of(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    found = _fields_cache.get(cls)
    if found is None:
        found = _fields_cache[cls] = dataclasses.fields(cls)
    return found


def kind_name(cls: type) -> str | None:
    """What ``cls`` is called in messages, or None if its instances are not recorded by name."""
    if issubclass(cls, enum.Enum):
        return "enum"
    if hasattr(cls, "__dataclass_fields__"):
        return "dataclass"
    if is_namedtuple_class(cls):
        return "named tuple"
    if known_types.is_pydantic_class(cls):
        return "pydantic model"
    return None


def class_reference(cls: type, kind: str) -> str:
    """The reference recorded for ``cls``; raises NotEncodable if no process could find it."""
    ref = known_types.encoding_ref(cls)
    if ref is not None:
        return ref
    name = f"{cls.__module__}.{cls.__qualname__}"
    if "<locals>" in cls.__qualname__:
        raise NotEncodable(
            f"{kind} {name} is defined inside a function, so it cannot be found by name when "
            f"the payload is read back; define it at module level"
        )
    raise NotEncodable(
        f"{kind} {name} cannot be found by that name in its module; define it at module level "
        f"under the name it was created with, or register it with undying.register_type"
    )


def encoder_for(cls: type) -> Encode | None:
    """How to write instances of ``cls`` (None if they are not recorded by name)."""
    kind = kind_name(cls)
    if kind is None:
        return None
    if kind == "pydantic model":
        return _PydanticEncoder(cls).encode
    ref = class_reference(cls, kind)
    if kind == "enum":
        enum_tag = tag(Kind.ENUM, ref)
        return lambda value: [enum_tag, value.value]
    if kind == "named tuple":
        tuple_tag = tag(Kind.NAMEDTUPLE, ref)
        return lambda value: [tuple_tag, *value]
    names = [field.name for field in fields_of(cls)]
    class_tag = tag(Kind.DATACLASS, ref, names)
    if not names:
        return lambda value: [class_tag]
    getter = operator.attrgetter(*names)
    if len(names) == 1:
        return lambda value: [class_tag, getter(value)]
    return lambda value: [class_tag, *getter(value)]


class _PydanticEncoder:
    """Writes one pydantic model class; tags are cached per set of ``__dict__`` keys."""

    __slots__ = ("args", "bits", "ref", "tags")

    def __init__(self, cls: type) -> None:
        metadata = getattr(cls, "__pydantic_generic_metadata__", None) or {}
        origin = metadata.get("origin")
        if origin is None:
            self.ref = class_reference(cls, "pydantic model")
            self.args: list[object] | None = None
        else:  # Page[Item]: its qualname "Page[Item]" names no class, so record Page and Item
            self.ref = class_reference(origin, "pydantic model")
            self.args = [_type_spec(arg) for arg in metadata.get("args", ())]
        self.tags: dict[tuple[str, ...], tuple[msgpack.ExtType, dict[str, int]]] = {}

    def encode(self, value: Any) -> list[Any]:
        state: dict[str, Any] = value.__dict__
        keys = tuple(state)
        found = self.tags.get(keys)
        if found is None:
            meta: list[object] = [self.ref, list(keys)]
            if self.args is not None:
                meta.append(self.args)
            found = self.tags[keys] = (tag(Kind.PYDANTIC, *meta), {k: 1 << i for i, k in
                                                                    enumerate(keys)})  # fmt: skip
        model_tag, bits = found
        fields_set = value.__pydantic_fields_set__
        try:
            mask: object = sum(map(bits.__getitem__, fields_set))
        except KeyError:  # model_construct(_fields_set=...) may name fields it did not set
            mask = sorted(fields_set)
        extra = value.__pydantic_extra__ or None
        private = value.__pydantic_private__ or None
        if private is not None:
            private = {k: v for k, v in private.items() if not _undefined(v)} or None
        return [model_tag, mask, extra, private, *state.values()]


def _undefined(value: object) -> bool:
    return type(value).__name__ == "PydanticUndefinedType"


def _type_spec(arg: object) -> object:
    """A generic model's type argument as data: a class reference, None, [origin, *args], or
    False for what cannot be written (the model is then read back as its origin class)."""
    if arg is None or arg is type(None):
        return None
    if isinstance(arg, type) and not isinstance(arg, types.GenericAlias):
        if getattr(arg, "__pydantic_generic_metadata__", {}).get("origin") is not None:
            return False
        return known_types.encoding_ref(arg) or False
    origin = getattr(arg, "__origin__", None)
    if isinstance(arg, types.UnionType) or origin is typing.Union:
        return ["|", *(_type_spec(a) for a in arg.__args__)]  # type: ignore[attr-defined]
    if isinstance(origin, type):
        return [_type_spec(origin), *(_type_spec(a) for a in getattr(arg, "__args__", ()))]
    return False


# -- decoding --------------------------------------------------------------------------------------


def resolve_tag(data: bytes) -> Tag:
    """The builder a tag stands for; raises SerializationError for an unknown class."""
    try:
        meta = msgpack.unpackb(data)
        kind = meta[0]
        maker = _MAKERS.get(kind)
    except Exception:
        maker = None
    if maker is None:
        raise SerializationError(
            "stored payload holds a value of a kind this version of undying does not know; it "
            "was written by a newer version (upgrade undying) or it is corrupt"
        )
    try:
        return Tag(maker(*meta[1:]))
    except SerializationError:
        raise
    except Exception as exc:
        raise SerializationError(f"stored payload has a corrupt tag ({exc})") from None


def known_class(ref: object, kind: str, check: Callable[[type], bool]) -> Any:
    """The known class recorded as ``ref``, checked to be a ``kind``."""
    if not isinstance(ref, str):
        raise SerializationError(f"stored payload is corrupt: bad class reference {ref!r}")
    cls = known_types.lookup(ref)
    name = ref.replace(":", ".", 1)
    if cls is None:
        module = ref.partition(":")[0]
        raise SerializationError(
            f"stored payload holds a {kind} of class {name}, which this process does not know. "
            f"undying never imports a module named by stored data; make the class known: "
            f"import it in the module that defines your workflows or steps (or use it in their "
            f"type annotations), or call undying.register_type({name}) at startup "
            f"(after importing {module})"
        )
    if not check(cls):
        raise SerializationError(
            f"stored payload holds a {kind} of class {name}, but {name} is not a {kind} class"
        )
    return cls


def _make_tuple() -> Callable[[list[Any]], Any]:
    return lambda items: tuple(items[1:])


def _make_set() -> Callable[[list[Any]], Any]:
    return lambda items: set(items[1:])


def _make_frozenset() -> Callable[[list[Any]], Any]:
    return lambda items: frozenset(items[1:])


def _make_enum(ref: object) -> Callable[[list[Any]], Any]:
    cls = known_class(ref, "enum", lambda c: issubclass(c, enum.Enum))

    def build(items: list[Any]) -> Any:
        try:
            return cls(items[1])
        except ValueError as exc:
            raise SerializationError(f"stored enum value no longer exists: {exc}") from None

    return build


def _make_namedtuple(ref: object) -> Callable[[list[Any]], Any]:
    cls = known_class(ref, "named tuple", is_namedtuple_class)

    def build(items: list[Any]) -> Any:
        try:
            return cls._make(items[1:])
        except TypeError as exc:
            raise SerializationError(f"stored {ref} does not fit: {exc}") from None

    return build


def _make_dataclass(ref: object, names: Sequence[str]) -> Callable[[list[Any]], Any]:
    cls = known_class(ref, "dataclass", lambda c: dataclasses.is_dataclass(c))
    return dataclass_builder(cls, list(names), str(ref))


def dataclass_builder(cls: Any, names: list[str], ref: str) -> Callable[[list[Any]], Any]:
    """Rebuild without calling ``__init__``/``__post_init__``: the recorded state is restored as it
    was (as pickle does). ``items[1:]`` are the values of ``names``."""
    fields = {field.name: field for field in fields_of(cls)}
    missing = []
    for name, field in fields.items():
        if name in names:
            continue
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise SerializationError(
                f"stored {ref.replace(':', '.')} has no value for field {name!r}, which has no "
                f"default (was the field added after the payload was written?)"
            )
        missing.append(field)
    keep = [i for i, name in enumerate(names, 1) if name in fields]
    kept = [names[i - 1] for i in keep]
    plain = not hasattr(cls, "__slots__") and not any(
        hasattr(type(inspect.getattr_static(cls, name, None)), "__set__") for name in kept
    )
    new = cls.__new__
    setattr_ = object.__setattr__
    size = len(names) + 1

    def build(items: list[Any]) -> Any:
        if len(items) != size:
            raise SerializationError(f"stored {ref.replace(':', '.')} is corrupt: wrong length")
        obj = new(cls)
        values = items[1:] if len(keep) == len(names) else [items[i] for i in keep]
        if plain:
            obj.__dict__.update(zip(kept, values, strict=False))  # length checked above
        else:
            for name, value in zip(kept, values, strict=False):
                setattr_(obj, name, value)
        for field in missing:
            default = field.default
            if default is dataclasses.MISSING:
                default = field.default_factory()  # type: ignore[operator]
            setattr_(obj, field.name, default)
        return obj

    return build


def _make_pydantic(
    ref: object, keys: Sequence[str], args: Sequence[object] | None = None
) -> Callable[[list[Any]], Any]:
    cls = known_class(ref, "pydantic model", known_types.is_pydantic_class)
    if args is not None:
        cls = _parametrize(cls, args)
    return _PydanticBuilder(cls, list(keys)).build


def _parametrize(origin: Any, specs: Sequence[object]) -> Any:
    """``origin[args]`` when every argument is known, else ``origin`` itself."""
    try:
        args = tuple(_type_from_spec(spec) for spec in specs)
        return origin[args if len(args) != 1 else args[0]]
    except Exception:
        return origin


def _type_from_spec(spec: object) -> Any:
    if spec is None:
        return type(None)
    if isinstance(spec, str):
        found = known_types.lookup(spec)
        if found is None:
            raise LookupError(spec)
        return found
    if isinstance(spec, list) and spec:
        head, *rest = spec
        args = [_type_from_spec(item) for item in rest]
        if head == "|":
            return functools.reduce(operator.or_, args)
        return _type_from_spec(head)[tuple(args) if len(args) != 1 else args[0]]
    raise LookupError(spec)


@functools.cache
def _default_takes_data() -> bool:
    """Whether FieldInfo.get_default takes ``validated_data`` (pydantic 2.10 and later)."""
    field_info = sys.modules["pydantic.fields"].FieldInfo
    return "validated_data" in inspect.signature(field_info.get_default).parameters


class _PydanticBuilder:
    """Restores pydantic models of one class from one ``__dict__`` layout, as ``__setstate__``
    does: no validator runs."""

    def __init__(self, cls: Any, keys: list[str]) -> None:
        fields = cls.__pydantic_fields__
        self.cls = cls
        self.keys = keys
        self.keep = [i for i, key in enumerate(keys) if key in fields]
        self.kept = [keys[i] for i in self.keep]
        self.missing = [
            (name, field)
            for name, field in fields.items()
            if name not in keys and not field.is_required()
        ]
        self.extra_allowed = cls.model_config.get("extra") == "allow"
        self.root = bool(getattr(cls, "__pydantic_root_model__", False))
        self.private_defaults = {
            name: attr
            for name, attr in (getattr(cls, "__private_attributes__", None) or {}).items()
        }
        self.masks: dict[int, frozenset[str]] = {}
        self.takes_data = _default_takes_data()

    def build(self, items: list[Any]) -> Any:
        cls = self.cls
        mask, extra, private = items[1], items[2], items[3]
        values = items[4:]
        if len(values) != len(self.keys):
            raise SerializationError(f"stored {cls.__qualname__} is corrupt: wrong length")
        if len(self.keep) == len(values):
            state = dict(zip(self.kept, values, strict=False))  # lengths compared above
        else:
            state = {self.keys[i]: values[i] for i in self.keep}
        for name, field in self.missing:
            if self.takes_data:
                state[name] = field.get_default(call_default_factory=True, validated_data=state)
            else:
                state[name] = field.get_default(call_default_factory=True)
        obj = cls.__new__(cls)
        setattr_ = object.__setattr__
        setattr_(obj, "__dict__", state)
        setattr_(obj, "__pydantic_fields_set__", self._fields_set(mask))
        if self.root:  # a RootModel has no extra or private state (see model_construct)
            return obj
        if extra is None and self.extra_allowed:
            extra = {}
        setattr_(obj, "__pydantic_extra__", extra)
        if self.private_defaults:
            private = dict(private or {})
            for name, attr in self.private_defaults.items():
                if name not in private:
                    default = attr.get_default()
                    if not _undefined(default):
                        private[name] = default
        setattr_(obj, "__pydantic_private__", private)
        return obj

    def _fields_set(self, mask: object) -> set[str]:
        if isinstance(mask, list):
            return set(mask)
        if not isinstance(mask, int):
            raise SerializationError("stored pydantic model is corrupt: bad fields_set")
        names = self.masks.get(mask)
        if names is None:
            names = frozenset(key for i, key in enumerate(self.keys) if mask >> i & 1)
            if len(self.masks) < 256:
                self.masks[mask] = names
        return set(names)


_MAKERS: Final[dict[int, Callable[..., Callable[[list[Any]], Any]]]] = {
    Kind.TUPLE: _make_tuple,
    Kind.SET: _make_set,
    Kind.FROZENSET: _make_frozenset,
    Kind.ENUM: _make_enum,
    Kind.DATACLASS: _make_dataclass,
    Kind.PYDANTIC: _make_pydantic,
    Kind.NAMEDTUPLE: _make_namedtuple,
}
