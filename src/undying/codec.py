"""Values to bytes and back, for everything undying journals.

Every step result, argument digest, event and status goes through :class:`Codec`, so encoding sits
on the hot path of every journaled call: small values take a few microseconds (a pooled C
``msgpack`` packer, a precomputed frame for ``None``), and only the failure path walks the value in
Python to explain what went wrong.

Format
------
A payload is a *frame*::

    header (1 byte) | body | CRC32 of header + body (4 bytes, little-endian)

The body is msgpack, and the header says how to read it::

    0x01  msgpack                           0x03  msgpack holding tagged arrays
    0x02  zstd frame of msgpack             0x04  zstd frame of msgpack holding tagged arrays

Any other header byte means a newer (or corrupt) payload. The CRC makes every single-byte flip and
practically every other corruption fail loudly instead of decoding to a different value. Bodies are
compressed only when they are larger than ``compress_threshold``, compression actually saves space,
and the frame is still small enough to be stored whole: frames above :data:`CHUNK_THRESHOLD` are
left uncompressed because the store splits them into content-defined chunks
(:mod:`undying.chunking`) and compresses each chunk; a whole-payload zstd stream would make every
turn of a growing history look new and defeat deduplication. So a zstd body never holds more than
``CHUNK_THRESHOLD`` bytes, and one that claims more (or does not record its size) is refused before
anything is allocated.

msgpack carries None, bool, int, float, str, bytes, list and dict natively: a JSON-like value is
encoded exactly as it always was, so argument digests of such values never change.
``strict_types`` sends everything else, including tuples and subclasses such as ``IntEnum``, to the
packer's ``default`` hook:

* leaf values become msgpack ext types (codes in ``_Ext``): ints beyond 64 bits, datetime, date,
  time, timedelta, Decimal, UUID, and pickles;
* tuples, sets, frozensets, enum members, dataclasses, named tuples and pydantic models become
  *tagged arrays* (:mod:`undying.codec_classes`), packed in the same pass. A frame holding any is
  marked ``0x03``/``0x04`` and decoded with a ``list_hook`` that turns them back into objects; a
  frame without any is decoded without the hook, as fast as before.

bytearray and memoryview are written as bytes and read back as bytes. Classes are recorded by name
and resolved only among the classes the application made known (:mod:`undying.known_types`): a
stored name never makes undying import a module. Pickle is an opt-in: a pickle in a shared database
lets anyone who can write to it run code in every worker.

Nesting
-------
A value may nest at most :data:`MAX_DEPTH` containers (each list, dict, tuple, set, enum member,
dataclass, named tuple or pydantic model is one level). Encoding refuses a deeper value, naming
its path, so whatever was journaled can be read back: decoding is a single ``unpackb`` call
(no recursion, a few KB of C stack at any depth) whose container stack (1,024 in msgpack 1.x)
holds MAX_DEPTH. The check is free for bodies of at most MAX_DEPTH bytes (each level costs at
least one byte); a longer body is walked by msgpack's own ``Unpacker.skip()`` behind a prefix of
one-element arrays that leaves it exactly MAX_DEPTH levels of the decoder's stack. That walk costs
~0.16x the packing (measured on a 300 KB history of 2,000 messages; a Python walk of the value
costs ~3x). Frames written before tags are read by :mod:`undying.codec_legacy`, which bounds their
recursion.
"""

from __future__ import annotations

import datetime as dt
import decimal
import struct
import sys
import uuid
import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final, cast

import msgpack

from . import codec_legacy
from .codec_classes import (
    TAG,
    Encode,
    Kind,
    NotEncodable,
    Tag,
    encoder_for,
    fields_of,
    kind_name,
    resolve_tag,
    tag,
)
from .errors import SerializationError

try:  # hashlib.blake2b is this very function; importing hashlib would also load OpenSSL
    from _blake2 import blake2b as _blake2b  # (_hashlib, ~1 ms) at every start, unused here
except ImportError:  # pragma: no cover - an interpreter built without the module
    from hashlib import blake2b as _blake2b

if TYPE_CHECKING:  # imported where used: most payloads never need them, and imports cost startup
    import zstandard

__all__ = [
    "CHUNK_THRESHOLD",
    "MAX_DEPTH",
    "Codec",
    "digest",
    "uncompressed",
    "zstd_compress",
    "zstd_decompress",
]

CHUNK_THRESHOLD: Final = 16 * 1024
"""Encoded payloads larger than this are stored as content-defined chunks, not whole."""

MAX_DEPTH: Final = 1000
"""Containers nested deeper than this are refused when encoding (lists 600 deep are fine)."""

_PLAIN: Final = 0x01
_ZSTD: Final = 0x02
_TAGGED: Final = 0x03
_TAGGED_ZSTD: Final = 0x04
_HEADER: Final = {code: bytes((code,)) for code in (_PLAIN, _ZSTD, _TAGGED, _TAGGED_ZSTD)}
_CRC_SEED: Final = {code: zlib.crc32(byte) for code, byte in _HEADER.items()}
_CRC: Final = struct.Struct("<I")
_OVERHEAD: Final = 1 + _CRC.size
_MAX_COMPRESSED_BODY: Final = CHUNK_THRESHOLD - _OVERHEAD


def _frame(header: int, body: bytes) -> bytes:
    return b"".join((_HEADER[header], body, _CRC.pack(zlib.crc32(body, _CRC_SEED[header]))))


_NONE_FRAME: Final = _frame(_PLAIN, msgpack.packb(None))

_POOL_SIZE: Final = 16
_POOL_MAX_BUFFER: Final = 1 << 20
"""A packer that just produced more than this is dropped, so pools never pin big buffers."""

_MAX_SET_NESTING: Final = 8
"""Sets are sorted by their members' encodings, packed separately, so a set inside a member of a
set is packed from inside that packing: each such level may hold ~430 KB of C stack (1,000 levels
of the packer's recursion). Eight levels stay under 4 MB."""

_PROTOCOL: Final = 5  # fixed, not HIGHEST_PROTOCOL: older workers must read what newer ones write
_LEAVE: Final = object()
_FIX_HINT: Final = (
    "Use a JSON-compatible value (dict, list, str, int, float, bool, None), bytes, a "
    "datetime/date/time/timedelta, UUID, Decimal, Enum, set, tuple, a dataclass, a NamedTuple or a "
    "pydantic model; or opt in with App(allow_pickle=True), but only if nobody untrusted can write "
    "to the database."
)
_TOO_DEEP: Final = (
    f"the value is nested more than {MAX_DEPTH} levels deep (each list, dict, tuple, set, "
    f"dataclass, named tuple or pydantic model is a level); store a long chain as a list instead"
)


class _Ext:
    """msgpack ext type codes. Stored in the journal forever: never renumber, only add.

    2-4 and 11-14 are the containers of frames written before tags (read by codec_legacy); the
    tag kinds reuse those numbers."""

    BIGINT = 1
    DATETIME = 5
    DATE = 6
    TIME = 7
    TIMEDELTA = 8
    DECIMAL = 9
    UUID = 10
    PICKLE = 15
    TAG = TAG


def uncompressed(frame: bytes) -> bytes | None:
    """The same value's frame with its body not compressed, for a sound compressed frame
    (None for any other). The chunker cuts a history at its messages, which it cannot do
    inside a zstd stream; the value read back is the same."""
    header = frame[0] if len(frame) > _OVERHEAD else None
    if header not in (_ZSTD, _TAGGED_ZSTD):
        return None
    body = frame[1:-4]
    if zlib.crc32(body, _CRC_SEED[header]) != _CRC.unpack_from(frame, len(frame) - 4)[0]:
        return None  # damaged: stored as it is, and refused when read
    try:
        plain = zstd_decompress(body, _MAX_COMPRESSED_BODY)
    except SerializationError:
        return None
    return _frame(_PLAIN if header == _ZSTD else _TAGGED, plain)


def digest(data: bytes) -> bytes:
    """A 16-byte fingerprint of encoded bytes; replay compares argument digests with it."""
    return _blake2b(data, digest_size=16).digest()


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


# -- nesting -------------------------------------------------------------------------------------

_depth_prefix: list[bytes] = []


def _decoder_holds(depth: int) -> bool:
    """Whether msgpack's unpacker can walk ``depth`` nested arrays."""
    unpacker = msgpack.Unpacker()
    unpacker.feed(b"\x91" * (depth - 1) + b"\x90")
    try:
        unpacker.skip()
    except Exception:  # StackError from the C unpacker (RecursionError from the pure-Python one)
        return False
    return True


def _prefix() -> bytes:
    """One-element array headers that leave a body exactly MAX_DEPTH levels of the decoder."""
    if not _depth_prefix:
        low, high = 1, 1 << 13  # the decoder holds `low` levels and not `high`
        if _decoder_holds(high):
            raise RuntimeError("msgpack's unpacker reports no nesting limit; cannot check depth")
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if _decoder_holds(middle) else (low, middle)
        _depth_prefix.append(b"\x91" * max(low - MAX_DEPTH, 0))
    return _depth_prefix[0]


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
    raise NotEncodable(
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



# -- encoding ------------------------------------------------------------------------------------

_TUPLE_TAG: Final = tag(Kind.TUPLE)
_SET_TAG: Final = tag(Kind.SET)
_FROZENSET_TAG: Final = tag(Kind.FROZENSET)
_class_encoders: dict[type, Encode] = {}


def _class_encoder(cls: type) -> Encode | None:
    found = _class_encoders.get(cls)
    if found is None:
        found = encoder_for(cls)
        if found is not None:
            _class_encoders[cls] = found
    return found


class _Encoder:
    """A msgpack packer with its ``default`` hook; used by one thread at a time (pooled).

    ``tagged`` records whether the last value packed holds a tagged array; ``sets`` is how many
    sets this packing is nested in (see _MAX_SET_NESTING).
    """

    __slots__ = ("by_type", "checker", "codec", "packer", "sets", "state", "tagged")

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.tagged = False
        self.sets = 0
        self.checker: msgpack.Unpacker | None = None
        self.state = msgpack.Packer(use_bin_type=True)  # for leaves' plain state, never nested
        self.packer = msgpack.Packer(default=self.default, strict_types=True, use_bin_type=True)
        self.by_type: dict[type, Callable[[Any], Any]] = {
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

    def default(self, value: Any) -> Any:
        convert = self.by_type.get(type(value))
        if convert is not None:
            return convert(value)
        encode = _class_encoder(type(value))
        if encode is not None:
            self.tagged = True
            return encode(value)
        if self.codec.allow_pickle:
            try:
                import pickle

                return msgpack.ExtType(_Ext.PICKLE, pickle.dumps(value, protocol=_PROTOCOL))
            except Exception as exc:
                raise NotEncodable(f"pickle failed: {type(exc).__name__}: {exc}") from None
        hint = "; convert it with .tolist() or .item()" if type(value).__module__ == "numpy" else ""
        raise NotEncodable(f"a value of type {_type_name(value)} is not supported{hint}")

    def too_deep(self, body: bytes) -> bool:
        """Whether ``body`` nests more than MAX_DEPTH containers (see Nesting above)."""
        checker = self.checker
        if checker is None:
            checker = self.checker = msgpack.Unpacker(max_buffer_size=0)
        try:
            checker.feed(_prefix())
            checker.feed(body)
            checker.skip()
        except Exception:  # StackError; the unpacker is left mid-value, so it is dropped
            self.checker = None
            return True
        if len(body) > _POOL_MAX_BUFFER:
            self.checker = None  # its buffer grew to the body's size
        return False

    def _bigint(self, value: int) -> msgpack.ExtType:
        size = (value.bit_length() + 8) // 8
        return msgpack.ExtType(_Ext.BIGINT, value.to_bytes(size, "big", signed=True))

    def _tuple(self, value: tuple[Any, ...]) -> list[Any]:
        self.tagged = True
        return [_TUPLE_TAG, *value]

    def _members(self, value: set[Any] | frozenset[Any]) -> list[Any]:
        # Sorted by encoding, so that equal sets encode (and digest) the same in every process.
        self.tagged = True
        if self.sets >= _MAX_SET_NESTING:
            raise NotEncodable(
                f"sets nest inside members of sets more than {_MAX_SET_NESTING} levels deep"
            )
        nested = self.sets + 1
        return sorted(value, key=lambda member: self.codec._pack_member(member, nested))

    def _set(self, value: set[Any]) -> list[Any]:
        return [_SET_TAG, *self._members(value)]

    def _frozenset(self, value: frozenset[Any]) -> list[Any]:
        return [_FROZENSET_TAG, *self._members(value)]

    def _datetime(self, value: dt.datetime) -> msgpack.ExtType:
        state = [value.toordinal(), value.hour, value.minute, value.second, value.microsecond,
                 value.fold, _tz_state(value.tzinfo)]  # fmt: skip
        return msgpack.ExtType(_Ext.DATETIME, self.state.pack(state))

    def _date(self, value: dt.date) -> msgpack.ExtType:
        return msgpack.ExtType(_Ext.DATE, self.state.pack(value.toordinal()))

    def _time(self, value: dt.time) -> msgpack.ExtType:
        state = [value.hour, value.minute, value.second, value.microsecond, value.fold,
                 _tz_state(value.tzinfo)]  # fmt: skip
        return msgpack.ExtType(_Ext.TIME, self.state.pack(state))

    def _timedelta(self, value: dt.timedelta) -> msgpack.ExtType:
        state = [value.days, value.seconds, value.microseconds]
        return msgpack.ExtType(_Ext.TIMEDELTA, self.state.pack(state))

    def _decimal(self, value: decimal.Decimal) -> msgpack.ExtType:
        return msgpack.ExtType(_Ext.DECIMAL, str(value).encode("ascii"))

    def _uuid(self, value: uuid.UUID) -> msgpack.ExtType:
        return msgpack.ExtType(_Ext.UUID, value.bytes)


# -- decoding ------------------------------------------------------------------------------------

_tags: dict[bytes, Tag] = {}
_TAG_CACHE_SIZE: Final = 4096


def _tag(data: bytes) -> Tag:
    found = _tags.get(data)
    if found is None:
        found = resolve_tag(data)
        if len(_tags) >= _TAG_CACHE_SIZE:  # planted payloads could hold any number of tags
            _tags.clear()
        _tags[data] = found
    return found


def _untag(items: list[Any]) -> Any:
    """msgpack's list_hook for tagged frames: called innermost first, so no recursion."""
    if items and type(items[0]) is Tag:
        return items[0].build(items)
    return items


def _plain(data: bytes) -> Any:
    """A leaf's state: plain msgpack, read without hooks so that it cannot nest anything."""
    return msgpack.unpackb(data, raw=False)


def _load_datetime(data: bytes) -> dt.datetime:
    ordinal, hour, minute, second, micro, fold, tz = _plain(data)
    day = dt.date.fromordinal(ordinal)
    return dt.datetime(day.year, day.month, day.day, hour, minute, second, micro,
                       _tz_from_state(tz), fold=fold)  # fmt: skip


def _load_time(data: bytes) -> dt.time:
    hour, minute, second, micro, fold, tz = _plain(data)
    return dt.time(hour, minute, second, micro, _tz_from_state(tz), fold=fold)


_LEAVES: Final[dict[int, Callable[[bytes], Any]]] = {
    _Ext.BIGINT: lambda data: int.from_bytes(data, "big", signed=True),
    _Ext.DATETIME: _load_datetime,
    _Ext.DATE: lambda data: dt.date.fromordinal(_plain(data)),
    _Ext.TIME: _load_time,
    _Ext.TIMEDELTA: lambda data: dt.timedelta(*_plain(data)),
    _Ext.DECIMAL: lambda data: decimal.Decimal(data.decode("ascii")),
    _Ext.UUID: lambda data: uuid.UUID(bytes=data),
}


# -- the codec -------------------------------------------------------------------------------------


class Codec:
    """Encodes values to framed msgpack and back; safe to share between threads.

    ``allow_pickle`` lets values no other rule handles be pickled, and lets pickled values be
    read back; without it, a payload holding a pickle is refused rather than unpickled.
    """

    def __init__(self, *, allow_pickle: bool = False, compress_threshold: int = 2048) -> None:
        self.allow_pickle = allow_pickle
        self.compress_threshold = compress_threshold
        self._encoders: list[_Encoder] = []

    # encoding

    def encode(self, value: object, root: str = "value") -> bytes:
        """Encode ``value`` into a frame; ``root`` names it in error messages."""
        if value is None:
            return _NONE_FRAME
        try:
            encoder = self._encoders.pop()
        except IndexError:
            encoder = _Encoder(self)
        encoder.tagged = False
        try:
            body: bytes = encoder.packer.pack(value)  # on error the encoder is dropped
        except Exception as exc:  # whatever failed, the walk below says where
            raise self._explain(value, root, exc) from None
        size = len(body)
        if size > MAX_DEPTH and encoder.too_deep(body):  # a level costs at least one byte
            raise self._explain(value, root, NotEncodable(_TOO_DEEP))
        tagged = encoder.tagged
        if size <= _POOL_MAX_BUFFER and len(self._encoders) < _POOL_SIZE:
            self._encoders.append(encoder)
        if self.compress_threshold < size <= _MAX_COMPRESSED_BODY:
            packed = zstd_compress(body)
            if len(packed) < size:
                return _frame(_TAGGED_ZSTD if tagged else _ZSTD, packed)
        return _frame(_TAGGED if tagged else _PLAIN, body)

    def _pack_member(self, value: object, sets: int) -> bytes:
        """A set member's encoding, its sort key. Packers are not reentrant: this packs with
        another encoder from the pool while the caller's is inside its default hook."""
        try:
            encoder = self._encoders.pop()
        except IndexError:
            encoder = _Encoder(self)
        encoder.sets = sets
        body: bytes = encoder.packer.pack(value)
        encoder.sets = 0
        if len(body) <= _POOL_MAX_BUFFER and len(self._encoders) < _POOL_SIZE:
            self._encoders.append(encoder)
        return body

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
        if header in (_ZSTD, _TAGGED_ZSTD):
            body = zstd_decompress(body, _MAX_COMPRESSED_BODY)
        try:
            if header <= _ZSTD:
                return msgpack.unpackb(
                    body, ext_hook=self._ext_hook, raw=False, strict_map_key=False
                )
            return msgpack.unpackb(
                body, ext_hook=self._tagged_ext_hook, list_hook=_untag, raw=False,
                strict_map_key=False,
            )  # fmt: skip
        except SerializationError:
            raise
        except msgpack.StackError:
            raise SerializationError(
                f"stored payload nests values deeper than the {MAX_DEPTH} levels undying ever "
                f"writes: it is corrupt"
            ) from None
        except Exception as exc:
            raise SerializationError(
                f"stored payload cannot be decoded ({type(exc).__name__}: {exc}); it was probably "
                f"written by a different version of undying"
            ) from None

    def _leaf(self, code: int, data: bytes) -> Any:
        load = _LEAVES.get(code)
        if load is not None:
            return load(data)
        if code == _Ext.PICKLE:
            return self._load_pickle(data)
        raise SerializationError(
            f"stored payload holds a value of kind {code} that this version of undying does "
            f"not know; it was written by a newer version"
        )

    def _ext_hook(self, code: int, data: bytes) -> Any:
        if code in codec_legacy.CODES:
            return codec_legacy.load(code, data, self._leaf)
        return self._leaf(code, data)

    def _tagged_ext_hook(self, code: int, data: bytes) -> Any:
        if code == TAG:
            return _tags.get(data) or _tag(data)
        return self._leaf(code, data)

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
            hint = "" if reason in (_TOO_DEEP, _CONTAINS_ITSELF) else f" {_FIX_HINT}"
            message = f"cannot serialize {_short(path)}: {reason}.{hint}"
            return SerializationError(message, path=path)
        reason = exc.reason if isinstance(exc, NotEncodable) else f"{type(exc).__name__}: {exc}"
        return SerializationError(f"cannot serialize {root}: {reason}", path=root)

    def _problems(self, value: object, root: str) -> Iterator[tuple[str, str]]:
        """Walk ``value`` the way encoding does and yield (path, reason) for what fails.

        Slow and only run after encoding failed. Iterative, so a deep or self-containing value
        cannot overflow the Python stack; ``open_`` holds the containers on the current path,
        and a ``_LEAVE`` entry, pushed below a container's children, takes it off again.
        ``depth`` counts the containers enclosing an item.
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
                except NotEncodable as exc:
                    yield path, exc.reason
                continue
            if cls in leaves:
                continue
            if id(item) in open_:
                yield path, _CONTAINS_ITSELF
                continue
            try:
                children = list(self._children(item, path))
            except NotEncodable as exc:
                yield path, exc.reason
                continue
            except Exception as exc:
                yield path, f"{type(exc).__name__}: {exc}"
                continue
            if not children and not _is_container(item):
                continue  # a leaf ext or a pickle
            if depth >= MAX_DEPTH:
                yield path, _TOO_DEEP
                continue
            open_.add(id(item))
            stack.append((_LEAVE, path, id(item)))
            stack.extend((child, child_path, depth + 1) for child, child_path in reversed(children))

    def _children(self, item: Any, path: str) -> Iterator[tuple[object, str]]:
        """The parts of a container, each with its path, as encoding writes them; raises
        NotEncodable for a leaf that cannot be encoded."""
        cls = type(item)
        if cls is list or cls is tuple:
            for index, child in enumerate(item):
                yield child, f"{path}[{index}]"
        elif cls is dict:
            import json
            import reprlib

            for key, child in item.items():
                name = json.dumps(key) if type(key) is str else reprlib.repr(key)
                yield key, f"{path}<key {reprlib.repr(key)}>"
                yield child, f"{path}[{name}]"
        elif cls is set or cls is frozenset:
            import reprlib

            for child in item:  # reprlib: a plain repr of a deep member would recurse
                yield child, f"{path}<element {reprlib.repr(child)}>"
        elif kind_name(cls) is not None:
            _class_encoder(cls)  # raises NotEncodable when the class cannot be recorded by name
            yield from _class_children(item, path)
        else:
            _Encoder(self).default(item)  # a leaf: pickle it (when allowed) or raise why not


_CONTAINS_ITSELF: Final = "the value contains itself"


def _is_container(item: object) -> bool:
    cls = type(item)
    return cls in (list, tuple, dict, set, frozenset) or kind_name(cls) is not None


def _class_children(item: Any, path: str) -> Iterator[tuple[object, str]]:
    cls = type(item)
    kind = kind_name(cls)
    if kind == "enum":
        yield item.value, f"{path}.value"
    elif kind == "dataclass":
        for field in fields_of(cls):
            yield getattr(item, field.name), f"{path}.{field.name}"
    elif kind == "named tuple":
        for name, child in zip(cls._fields, item, strict=True):
            yield child, f"{path}.{name}"
    else:
        for name, child in item.__dict__.items():
            yield child, f"{path}.{name}"
        for attr in ("__pydantic_extra__", "__pydantic_private__"):
            if getattr(item, attr, None):
                yield getattr(item, attr), f"{path}.{attr}"


def _short(path: str) -> str:
    """A path for a message: a value 1,000 levels deep has a path of thousands of characters."""
    return path if len(path) <= 300 else f"{path[:140]} ... {path[-140:]}"


def _type_name(value: object) -> str:
    cls = type(value)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
