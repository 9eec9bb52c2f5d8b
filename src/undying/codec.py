"""Values to bytes and back, for everything undying journals.

Every step result, argument digest, event and status goes through :class:`Codec`, so encoding sits
on the hot path of every journaled call: small values take a few microseconds (a pooled C
``msgpack`` packer, a precomputed frame for ``None``), and only the failure path walks the value in
Python to explain what went wrong.

Format
------
A payload is a *frame*::

    header (1 byte) | body | CRC32 of header + body (4 bytes, little-endian)

``header`` is ``0x01`` when the body is msgpack and ``0x02`` when it is a zstd frame holding the
msgpack. Any other header byte means a newer (or corrupt) payload. The CRC makes every single-byte
flip and practically every other corruption fail loudly instead of decoding to a different value.
Bodies are compressed only when they are larger than ``compress_threshold``, compression actually
saves space, and the frame is still small enough to be stored whole: frames above
:data:`CHUNK_THRESHOLD` are left uncompressed because the store splits them into content-defined
chunks (:mod:`undying.chunking`) and compresses each chunk; a whole-payload zstd stream would make
every turn of a growing history look new and defeat deduplication. So a zstd body never holds more
than ``CHUNK_THRESHOLD`` bytes, and one that claims more (or does not record its size) is refused
before anything is allocated.

msgpack carries None, bool, int, float, str, bytes, list and dict natively. ``strict_types`` sends
everything else, including tuples, subclasses such as ``IntEnum`` and ints beyond 64 bits, to
:meth:`Codec._default`, which turns it into a msgpack ext type (codes in ``_Ext``). bytearray and
memoryview are written as bytes and read back as bytes.

Classes (enums, dataclasses, named tuples, pydantic models) are recorded by module and qualified
name; they must be importable at module level, which is checked when encoding so that a payload
that could never be read back is refused up front. Pickle is an opt-in: a pickle in a shared
database lets anyone who can write to it run code in every worker.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import importlib
import struct
import sys
import uuid
import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final, cast

import msgpack

from undying.errors import SerializationError

if TYPE_CHECKING:  # imported where used: most payloads never need them, and imports cost startup
    import zstandard

__all__ = ["CHUNK_THRESHOLD", "Codec", "digest", "zstd_compress", "zstd_decompress"]

CHUNK_THRESHOLD: Final = 16 * 1024
"""Encoded payloads larger than this are stored as content-defined chunks, not whole."""

_PLAIN: Final = 0x01
_ZSTD: Final = 0x02
_HEADER: Final = {_PLAIN: b"\x01", _ZSTD: b"\x02"}
_CRC_SEED: Final = {code: zlib.crc32(byte) for code, byte in _HEADER.items()}
_CRC: Final = struct.Struct("<I")
_OVERHEAD: Final = 1 + _CRC.size
_MAX_COMPRESSED_BODY: Final = CHUNK_THRESHOLD - _OVERHEAD
"""Bodies up to this size may be compressed (larger ones are chunked): no zstd body holds more."""


def _frame(header: int, body: bytes) -> bytes:
    return b"".join((_HEADER[header], body, _CRC.pack(zlib.crc32(body, _CRC_SEED[header]))))


_NONE_FRAME: Final = _frame(_PLAIN, msgpack.packb(None))

_POOL_SIZE: Final = 16
_POOL_MAX_BUFFER: Final = 1 << 20
"""A packer that just produced more than this is dropped, so pools never pin big buffers."""

_PROTOCOL: Final = 5  # fixed, not HIGHEST_PROTOCOL: older workers must read what newer ones write
_LEAVE: Final = object()
_FIX_HINT: Final = (
    "Use a JSON-compatible value (dict, list, str, int, float, bool, None), bytes, a "
    "datetime/date/time/timedelta, UUID, Decimal, Enum, set, tuple, a dataclass, a NamedTuple or a "
    "pydantic model; or opt in with App(allow_pickle=True), but only if nobody untrusted can write "
    "to the database."
)


class _Ext:
    """msgpack ext type codes. Stored in the journal forever: never renumber, only add."""

    BIGINT = 1
    TUPLE = 2
    SET = 3
    FROZENSET = 4
    DATETIME = 5
    DATE = 6
    TIME = 7
    TIMEDELTA = 8
    DECIMAL = 9
    UUID = 10
    ENUM = 11
    DATACLASS = 12
    PYDANTIC = 13
    NAMEDTUPLE = 14
    PICKLE = 15


def digest(data: bytes) -> bytes:
    """A 16-byte fingerprint of encoded bytes; replay compares argument digests with it."""
    return hashlib.blake2b(data, digest_size=16).digest()


# -- zstd, shared with undying.chunking ------------------------------------------------------------
# zstandard's (de)compressor objects must not be used by two threads at once, and building one
# costs more than compressing a small payload; list.pop/append are atomic, so a free list of them
# is both thread-safe and nearly free.

_compressors: list[zstandard.ZstdCompressor] = []
_decompressors: list[zstandard.ZstdDecompressor] = []


def zstd_compress(data: bytes | bytearray | memoryview) -> bytes:
    """Compress with zstd level 3 (a frame that records its content size)."""
    try:
        compressor = _compressors.pop()
    except IndexError:
        import zstandard

        compressor = zstandard.ZstdCompressor(level=3)
    result: bytes = compressor.compress(data)
    if len(_compressors) < _POOL_SIZE:
        _compressors.append(compressor)
    return result


def zstd_decompress(data: bytes | bytearray | memoryview, limit: int) -> bytes:
    """Decompress one zstd frame, refusing one that claims to hold more than ``limit`` bytes or
    does not say how much it holds.

    undying only writes frames that record their size, and knows the most each can hold, so a
    damaged or planted header cannot make it allocate gigabytes.
    """
    import zstandard

    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise SerializationError(f"stored payload is corrupt: bad zstd frame ({exc})") from None
    if size < 0:
        raise SerializationError(
            "stored payload is corrupt: its zstd frame does not record its size (undying always "
            "writes it)"
        )
    if size > limit:
        raise SerializationError(
            f"stored payload is corrupt: zstd frame claims {size} bytes (at most {limit} expected)"
        )
    try:
        decompressor = _decompressors.pop()
    except IndexError:
        decompressor = zstandard.ZstdDecompressor()
    try:
        result: bytes = decompressor.decompress(data)
    except zstandard.ZstdError as exc:
        raise SerializationError(f"stored payload is corrupt: {exc}") from None
    if len(_decompressors) < _POOL_SIZE:
        _decompressors.append(decompressor)
    return result


# -- classes recorded by name ----------------------------------------------------------------------


class _NotEncodable(Exception):
    """Raised inside the msgpack default hook; the caller turns it into a SerializationError."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _resolve(module: str, qualname: str) -> Any:
    obj: Any = sys.modules.get(module)
    if obj is None:
        obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


_paths: dict[type, tuple[str, str]] = {}


def _class_path(cls: type, kind: str) -> tuple[str, str]:
    """(module, qualname) of ``cls``, checked to import back to the very same class."""
    path = _paths.get(cls)
    if path is not None:
        return path
    module, qualname = cls.__module__, cls.__qualname__
    name = f"{module}.{qualname}"
    if "<locals>" in qualname:
        raise _NotEncodable(
            f"{kind} {name} is defined inside a function, so it cannot be imported when the "
            f"payload is read back; define it at module level"
        )
    try:
        found = _resolve(module, qualname)
    except Exception:
        found = None
    if found is not cls:
        raise _NotEncodable(
            f"{kind} {name} cannot be imported back by that name; define it at module level "
            f"under the name it was created with"
        )
    _paths[cls] = (module, qualname)
    return module, qualname


_classes: dict[tuple[str, str], Any] = {}


def _load_class(module: str, qualname: str, check: Callable[[Any], bool], kind: str) -> Any:
    cls = _classes.get((module, qualname))
    if cls is not None:
        return cls
    name = f"{module}.{qualname}"
    try:
        cls = _resolve(module, qualname)
    except Exception as exc:
        raise SerializationError(
            f"stored payload holds a {kind} of class {name}, which cannot be imported: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if not (isinstance(cls, type) and check(cls)):
        raise SerializationError(
            f"stored payload holds a {kind} of class {name}, but {name} is not a {kind} class"
        )
    _classes[(module, qualname)] = cls
    return cls


_dataclass_fields: dict[type, tuple[dataclasses.Field[Any], ...]] = {}


def _fields_of(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    found = _dataclass_fields.get(cls)
    if found is None:
        found = _dataclass_fields[cls] = dataclasses.fields(cls)
    return found


def _is_dataclass_instance(value: object) -> bool:
    return hasattr(type(value), "__dataclass_fields__")


def _is_namedtuple_class(cls: type) -> bool:
    return issubclass(cls, tuple) and hasattr(cls, "_fields") and hasattr(cls, "_make")


def _pydantic_base() -> Any:
    """pydantic's BaseModel if pydantic is loaded, else None: `import undying` must stay light."""
    main = sys.modules.get("pydantic.main")
    return None if main is None else getattr(main, "BaseModel", None)


# -- time zones ------------------------------------------------------------------------------------


def _tz_state(tz: dt.tzinfo | None) -> object:
    """None, an offset in microseconds, [offset, name] for a named offset, or a zoneinfo key."""
    if tz is None:
        return None
    if type(tz) is dt.timezone:
        offset = tz.utcoffset(None)
        micros = offset // dt.timedelta(microseconds=1)
        name = tz.tzname(None)
        return micros if name == dt.timezone(offset).tzname(None) else [micros, name]
    zoneinfo = sys.modules.get("zoneinfo")
    key = getattr(tz, "key", None)
    if zoneinfo is not None and type(tz) is zoneinfo.ZoneInfo and isinstance(key, str):
        return key
    raise _NotEncodable(
        f"time zone {tz!r} of type {type(tz).__qualname__} is not supported; use "
        f"datetime.timezone or zoneinfo.ZoneInfo"
    )


def _tz_from_state(state: object) -> dt.tzinfo | None:
    if state is None:
        return None
    if isinstance(state, int):
        return dt.timezone(dt.timedelta(microseconds=state))
    if isinstance(state, str):
        import zoneinfo

        try:
            return zoneinfo.ZoneInfo(state)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise SerializationError(
                f"stored datetime uses time zone {state!r}, which this machine does not know "
                f"(install tzdata?): {exc}"
            ) from None
    micros, name = cast("list[Any]", state)
    return dt.timezone(dt.timedelta(microseconds=micros), name)


# -- the codec -------------------------------------------------------------------------------------


class Codec:
    """Encodes values to framed msgpack and back; safe to share between threads.

    ``allow_pickle`` lets values no other rule handles be pickled, and lets pickled values be
    read back; without it, a payload holding a pickle is refused rather than unpickled.
    """

    def __init__(self, *, allow_pickle: bool = False, compress_threshold: int = 2048) -> None:
        self.allow_pickle = allow_pickle
        self.compress_threshold = compress_threshold
        self._packers: list[msgpack.Packer] = []
        self._by_type: dict[type, Callable[[Any], msgpack.ExtType]] = {
            int: self._bigint,
            tuple: self._tuple,
            set: self._set,
            frozenset: self._frozenset,
            dt.datetime: self._datetime,
            dt.date: self._date,
            dt.time: self._time,
            dt.timedelta: self._timedelta,
            decimal.Decimal: self._decimal,
            uuid.UUID: self._uuid,
        }
        self._decoders: dict[int, Callable[[bytes], Any]] = {
            _Ext.BIGINT: lambda data: int.from_bytes(data, "big", signed=True),
            _Ext.TUPLE: lambda data: tuple(self._unpack(data)),
            _Ext.SET: lambda data: set(self._unpack(data)),
            _Ext.FROZENSET: lambda data: frozenset(self._unpack(data)),
            _Ext.DATETIME: self._load_datetime,
            _Ext.DATE: lambda data: dt.date.fromordinal(self._unpack(data)),
            _Ext.TIME: self._load_time,
            _Ext.TIMEDELTA: lambda data: dt.timedelta(*self._unpack(data)),
            _Ext.DECIMAL: lambda data: decimal.Decimal(data.decode("ascii")),
            _Ext.UUID: lambda data: uuid.UUID(bytes=data),
            _Ext.ENUM: self._load_enum,
            _Ext.DATACLASS: self._load_dataclass,
            _Ext.PYDANTIC: self._load_pydantic,
            _Ext.NAMEDTUPLE: self._load_namedtuple,
            _Ext.PICKLE: self._load_pickle,
        }

    # encoding

    def encode(self, value: object, root: str = "value") -> bytes:
        """Encode ``value`` into a frame; ``root`` names it in error messages."""
        if value is None:
            return _NONE_FRAME
        try:
            body = self._pack(value)
        except Exception as exc:  # whatever failed, the walk below says where
            raise self._explain(value, root, exc) from None
        size = len(body)
        if self.compress_threshold < size <= _MAX_COMPRESSED_BODY:
            packed = zstd_compress(body)
            if len(packed) < size:
                return _frame(_ZSTD, packed)
        return _frame(_PLAIN, body)

    def _pack(self, value: object) -> bytes:
        # Packers are not reentrant: the default hook packs nested values with another packer
        # from this free list, and a concurrent thread never shares one.
        try:
            packer = self._packers.pop()
        except IndexError:
            packer = msgpack.Packer(default=self._default, strict_types=True, use_bin_type=True)
        body: bytes = packer.pack(value)  # on error the packer is dropped, not reused
        if len(body) <= _POOL_MAX_BUFFER and len(self._packers) < _POOL_SIZE:
            self._packers.append(packer)
        return body

    def _default(self, value: Any) -> msgpack.ExtType:
        convert = self._by_type.get(type(value))
        if convert is not None:
            return convert(value)
        cls = type(value)
        if isinstance(value, enum.Enum):
            module, qualname = _class_path(cls, "enum")
            return msgpack.ExtType(_Ext.ENUM, self._pack([module, qualname, value.value]))
        if _is_dataclass_instance(value):
            module, qualname = _class_path(cls, "dataclass")
            state = {f.name: getattr(value, f.name) for f in _fields_of(cls)}
            return msgpack.ExtType(_Ext.DATACLASS, self._pack([module, qualname, state]))
        if _is_namedtuple_class(cls):
            module, qualname = _class_path(cls, "named tuple")
            return msgpack.ExtType(_Ext.NAMEDTUPLE, self._pack([module, qualname, list(value)]))
        base = _pydantic_base()
        if base is not None and isinstance(value, base):
            module, qualname = _class_path(cls, "pydantic model")
            try:  # unexpected field values pass through, so the error names them by path
                state = value.model_dump(mode="python", round_trip=True, warnings=False)
            except Exception as exc:
                raise _NotEncodable(f"pydantic cannot dump it: {exc}") from None
            return msgpack.ExtType(_Ext.PYDANTIC, self._pack([module, qualname, state]))
        if self.allow_pickle:
            try:
                import pickle

                return msgpack.ExtType(_Ext.PICKLE, pickle.dumps(value, protocol=_PROTOCOL))
            except Exception as exc:
                raise _NotEncodable(f"pickle failed: {type(exc).__name__}: {exc}") from None
        hint = "; convert it with .tolist() or .item()" if cls.__module__ == "numpy" else ""
        raise _NotEncodable(f"a value of type {_type_name(value)} is not supported{hint}")

    def _bigint(self, value: int) -> msgpack.ExtType:
        size = (value.bit_length() + 8) // 8
        return msgpack.ExtType(_Ext.BIGINT, value.to_bytes(size, "big", signed=True))

    def _tuple(self, value: tuple[Any, ...]) -> msgpack.ExtType:
        return msgpack.ExtType(_Ext.TUPLE, self._pack(list(value)))

    def _members(self, value: set[Any] | frozenset[Any]) -> bytes:
        # Sorted by encoding, so that equal sets encode (and digest) the same in every process.
        members = sorted(self._pack(member) for member in value)
        return _array_header(len(members)) + b"".join(members)

    def _set(self, value: set[Any]) -> msgpack.ExtType:
        return msgpack.ExtType(_Ext.SET, self._members(value))

    def _frozenset(self, value: frozenset[Any]) -> msgpack.ExtType:
        return msgpack.ExtType(_Ext.FROZENSET, self._members(value))

    def _datetime(self, value: dt.datetime) -> msgpack.ExtType:
        state = [value.toordinal(), value.hour, value.minute, value.second, value.microsecond,
                 value.fold, _tz_state(value.tzinfo)]  # fmt: skip
        return msgpack.ExtType(_Ext.DATETIME, self._pack(state))

    def _date(self, value: dt.date) -> msgpack.ExtType:
        return msgpack.ExtType(_Ext.DATE, self._pack(value.toordinal()))

    def _time(self, value: dt.time) -> msgpack.ExtType:
        state = [value.hour, value.minute, value.second, value.microsecond, value.fold,
                 _tz_state(value.tzinfo)]  # fmt: skip
        return msgpack.ExtType(_Ext.TIME, self._pack(state))

    def _timedelta(self, value: dt.timedelta) -> msgpack.ExtType:
        state = [value.days, value.seconds, value.microseconds]
        return msgpack.ExtType(_Ext.TIMEDELTA, self._pack(state))

    def _decimal(self, value: decimal.Decimal) -> msgpack.ExtType:
        return msgpack.ExtType(_Ext.DECIMAL, str(value).encode("ascii"))

    def _uuid(self, value: uuid.UUID) -> msgpack.ExtType:
        return msgpack.ExtType(_Ext.UUID, value.bytes)

    # decoding

    def decode(self, data: bytes | bytearray | memoryview) -> Any:
        """Decode a frame made by :meth:`encode`; a damaged or foreign one raises, never guesses."""
        if data == _NONE_FRAME:
            return None
        size = len(data)
        if size < _OVERHEAD + 1:
            raise SerializationError(
                f"stored payload is truncated: {size} bytes, a payload has at least {_OVERHEAD + 1}"
            )
        header = data[0]
        seed = _CRC_SEED.get(header)
        if seed is None:
            raise SerializationError(
                f"stored payload starts with format byte 0x{header:02x}, which this version of "
                f"undying does not know: it was written by a newer version (upgrade undying) or "
                f"it is corrupt"
            )
        body = data[1:-4]
        if zlib.crc32(body, seed) != _CRC.unpack_from(data, size - 4)[0]:
            raise SerializationError(
                "stored payload is corrupt or truncated: its CRC32 checksum does not match"
            )
        if header == _ZSTD:
            body = zstd_decompress(body, _MAX_COMPRESSED_BODY)
        try:
            return msgpack.unpackb(body, ext_hook=self._ext_hook, raw=False, strict_map_key=False)
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(
                f"stored payload cannot be decoded ({type(exc).__name__}: {exc}); it was probably "
                f"written by a different version of undying"
            ) from None

    def _unpack(self, data: bytes | memoryview) -> Any:
        return msgpack.unpackb(data, ext_hook=self._ext_hook, raw=False, strict_map_key=False)

    def _ext_hook(self, code: int, data: bytes) -> Any:
        load = self._decoders.get(code)
        if load is None:
            raise SerializationError(
                f"stored payload holds a value of kind {code} that this version of undying does "
                f"not know; it was written by a newer version"
            )
        return load(data)

    def _load_datetime(self, data: bytes) -> dt.datetime:
        ordinal, hour, minute, second, micro, fold, tz = self._unpack(data)
        day = dt.date.fromordinal(ordinal)
        return dt.datetime(day.year, day.month, day.day, hour, minute, second, micro,
                           _tz_from_state(tz), fold=fold)  # fmt: skip

    def _load_time(self, data: bytes) -> dt.time:
        hour, minute, second, micro, fold, tz = self._unpack(data)
        return dt.time(hour, minute, second, micro, _tz_from_state(tz), fold=fold)

    def _load_enum(self, data: bytes) -> enum.Enum:
        module, qualname, value = self._unpack(data)
        cls = _load_class(module, qualname, lambda c: issubclass(c, enum.Enum), "enum")
        try:
            member: enum.Enum = cls(value)
        except ValueError as exc:
            raise SerializationError(f"stored enum value no longer exists: {exc}") from None
        return member

    def _load_dataclass(self, data: bytes) -> Any:
        """Rebuild without calling ``__init__``/``__post_init__``: the recorded state is restored
        as it was (as pickle does). Fields added since get their defaults; removed ones are
        dropped."""
        module, qualname, state = self._unpack(data)
        cls = _load_class(module, qualname, dataclasses.is_dataclass, "dataclass")
        obj = cls.__new__(cls)
        for field in _fields_of(cls):
            if field.name in state:
                value = state[field.name]
            elif field.default is not dataclasses.MISSING:
                value = field.default
            elif field.default_factory is not dataclasses.MISSING:
                value = field.default_factory()
            else:
                raise SerializationError(
                    f"stored {module}.{qualname} has no value for field {field.name!r}, which "
                    f"has no default (was the field added after the payload was written?)"
                )
            object.__setattr__(obj, field.name, value)
        return obj

    def _load_namedtuple(self, data: bytes) -> Any:
        module, qualname, values = self._unpack(data)
        cls = _load_class(module, qualname, _is_namedtuple_class, "named tuple")
        try:
            return cls._make(values)
        except TypeError as exc:
            raise SerializationError(f"stored {module}.{qualname} does not fit: {exc}") from None

    def _load_pydantic(self, data: bytes) -> Any:
        module, qualname, state = self._unpack(data)

        def check(cls: type) -> bool:
            base = _pydantic_base()
            return base is not None and issubclass(cls, base)

        cls = _load_class(module, qualname, check, "pydantic model")
        try:
            return cls.model_validate(state)
        except ValueError as exc:  # pydantic.ValidationError
            raise SerializationError(
                f"stored {module}.{qualname} no longer validates: {exc}"
            ) from None

    def _load_pickle(self, data: bytes) -> Any:
        if not self.allow_pickle:
            raise SerializationError(
                "stored payload holds a pickled value, but pickle is disabled: unpickling data "
                "from a shared database lets whoever can write to it run code in this process. "
                "Use App(allow_pickle=True) only if every writer of the database is trusted."
            )
        import pickle

        return pickle.loads(data)

    # explaining failures

    def _explain(self, value: object, root: str, exc: BaseException) -> SerializationError:
        for path, reason in self._problems(value, root):
            return SerializationError(f"cannot serialize {path}: {reason}. {_FIX_HINT}", path=path)
        reason = exc.reason if isinstance(exc, _NotEncodable) else f"{type(exc).__name__}: {exc}"
        return SerializationError(f"cannot serialize {root}: {reason}", path=root)

    def _problems(self, value: object, root: str) -> Iterator[tuple[str, str]]:
        """Walk ``value`` the way encoding does and yield (path, reason) for what fails.

        Slow and only run after encoding failed. Iterative, so a deep or self-containing value
        cannot overflow the Python stack; ``open_`` holds the containers on the current path,
        and a ``_LEAVE`` entry, pushed below a container's children, takes it off again.
        """
        open_: set[int] = set()
        stack: list[tuple[object, str, int]] = [(value, root, 0)]
        leaves = (type(None), bool, float, bytes, bytearray, memoryview, int,
                  dt.date, dt.timedelta, decimal.Decimal, uuid.UUID)  # fmt: skip
        while stack:
            item, path, depth = stack.pop()
            if item is _LEAVE:
                open_.discard(depth)
                continue
            cls = type(item)
            if cls is str:
                try:
                    item.encode("utf-8")  # type: ignore[attr-defined]
                except UnicodeEncodeError:
                    yield path, "the string holds characters UTF-8 cannot encode (lone surrogates)"
                continue
            if cls in (dt.datetime, dt.time):
                try:
                    _tz_state(item.tzinfo)  # type: ignore[attr-defined]
                except _NotEncodable as exc:
                    yield path, exc.reason
                continue
            if cls in leaves:
                continue
            if id(item) in open_:
                yield path, "the value contains itself"
                continue
            if depth > 400:
                yield path, "the value is nested more than 400 levels deep"
                continue
            try:
                children = list(self._children(item, path))
            except _NotEncodable as exc:
                yield path, exc.reason
                continue
            except Exception as exc:
                yield path, f"{type(exc).__name__}: {exc}"
                continue
            open_.add(id(item))
            stack.append((_LEAVE, path, id(item)))
            stack.extend((child, child_path, depth + 1) for child, child_path in reversed(children))

    def _children(self, item: Any, path: str) -> Iterator[tuple[object, str]]:
        """The parts of a container, each with its path; raises _NotEncodable for a leaf that
        cannot be encoded."""
        cls = type(item)
        if cls is list or cls is tuple:
            for index, child in enumerate(item):
                yield child, f"{path}[{index}]"
        elif cls is dict:
            for key, child in item.items():
                yield key, f"{path}<key {key!r}>"
                import json

                yield child, f"{path}[{json.dumps(key) if type(key) is str else repr(key)}]"
        elif cls is set or cls is frozenset:
            for child in item:
                yield child, f"{path}<element {child!r}>"
        elif isinstance(item, enum.Enum):
            _class_path(cls, "enum")
            yield item.value, f"{path}.value"
        elif _is_dataclass_instance(item):
            _class_path(cls, "dataclass")
            for field in _fields_of(cls):
                yield getattr(item, field.name), f"{path}.{field.name}"
        elif _is_namedtuple_class(cls):
            _class_path(cls, "named tuple")
            for name, child in zip(cls._fields, item, strict=True):
                yield child, f"{path}.{name}"
        elif (base := _pydantic_base()) is not None and isinstance(item, base):
            _class_path(cls, "pydantic model")
            for name in cls.model_fields:
                if hasattr(item, name):  # model_construct() may have left it unset
                    yield getattr(item, name), f"{path}.{name}"
        else:
            self._default(item)  # a leaf: pickle it (when allowed) or raise why not


def _array_header(count: int) -> bytes:
    if count < 16:
        return bytes((0x90 | count,))
    if count < 1 << 16:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def _type_name(value: object) -> str:
    cls = type(value)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
