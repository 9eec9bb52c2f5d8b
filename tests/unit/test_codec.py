"""The codec: typed round trips, error paths, pickle opt-in and corruption detection."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import math
import subprocess
import sys
import threading
import uuid
import zlib
import zoneinfo
from typing import Any, NamedTuple

import msgpack
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from undying.codec import Codec, digest
from undying.errors import SerializationError

codec = Codec()
pickling = Codec(allow_pickle=True)


class Color(enum.Enum):
    RED = "red"
    PAIR = (1, 2)


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Kind(enum.StrEnum):
    TOOL = "tool"


class Perm(enum.Flag):
    READ = 1
    WRITE = 2


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: float


@dataclasses.dataclass
class Doc:
    id: uuid.UUID
    created: dt.datetime
    color: Color
    span: tuple[int, int]
    origin: Point
    tags: frozenset[str] = frozenset()
    children: list[Doc] = dataclasses.field(default_factory=list)
    note: str | None = None


@dataclasses.dataclass(slots=True)
class Slotted:
    a: int
    b: list[int]


@dataclasses.dataclass
class Derived:
    a: int
    doubled: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.doubled = self.a * 2


@dataclasses.dataclass
class Chunk:
    text: str
    embedding: object


class Pair(NamedTuple):
    left: int
    right: str


class Address(pydantic.BaseModel):
    city: str
    zip_code: str


class User(pydantic.BaseModel):
    id: uuid.UUID
    name: str
    joined: dt.datetime
    address: Address
    tags: tuple[str, ...] = ()
    level: Level = Level.LOW
    scores: dict[str, float] = {}


class Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    a: int

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def double(self) -> int:
        return self.a * 2


class Plain:
    def __init__(self, a: int) -> None:
        self.a = a

    def __eq__(self, other: object) -> bool:
        return type(other) is Plain and other.a == self.a

    __hash__ = None  # type: ignore[assignment]


class OddZone(dt.tzinfo):
    """A tzinfo the codec has no rule for."""

    def utcoffset(self, when: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(hours=1)

    def dst(self, when: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(0)

    def tzname(self, when: dt.datetime | None) -> str:
        return "ODD"


class Opaque:
    """Hashable, and nothing else."""


UNPICKLED: list[str] = []


def _record(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class Sneaky:
    """Unpickling it runs _record: stands in for a malicious pickle."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _record, ("ran",)


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down; NaN equals NaN, -0.0 differs from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    if isinstance(a, dt.datetime | dt.time):
        return bool(a == b and a.tzinfo == b.tzinfo and a.fold == b.fold)
    if dataclasses.is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    return bool(a == b)


def round_trip(value: Any, using: Codec = codec) -> Any:
    decoded = using.decode(using.encode(value))
    assert same(value, decoded), (value, decoded)
    return decoded


UTC = dt.UTC
PARIS = zoneinfo.ZoneInfo("Europe/Paris")

VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    2**64 - 1,
    2**64,
    -(2**63),
    -(2**63) - 1,
    2**1000,
    -(2**1000) + 7,
    0.0,
    -0.0,
    1.5,
    math.inf,
    -math.inf,
    math.nan,
    "",
    "héllo ✓ 🎉",
    "x" * 100_000,
    b"",
    b"\x00\xff" * 10,
    [],
    [1, "a", None, [2.5]],
    (),
    (1,),
    (1, (2, (3, [4, (5,)]))),
    {},
    {"a": 1, "b": "x"},
    {1: "int key", (1, "t"): "tuple key", None: 0, b"k": 1, frozenset({1}): 2, 2.5: 3},
    {"z": 1, "a": 2, "m": 3},
    {1, 2, 3},
    {"a", (1, 2), None},
    frozenset({"x", "y"}),
    set(),
    dt.datetime(2024, 5, 1, 12, 30, 15, 123456),
    dt.datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
    dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
    dt.datetime(2024, 5, 1, tzinfo=dt.timezone(-dt.timedelta(hours=3), "BRT")),
    dt.datetime(2024, 5, 1, tzinfo=dt.timezone(dt.timedelta(seconds=1, microseconds=5))),
    dt.datetime(2024, 7, 1, 9, tzinfo=PARIS),
    dt.datetime(2024, 10, 27, 2, 30, tzinfo=PARIS, fold=1),
    dt.datetime.min,
    dt.datetime.max,
    dt.date(2024, 2, 29),
    dt.date.min,
    dt.time(23, 59, 59, 999999),
    dt.time(8, 0, tzinfo=UTC),
    dt.timedelta(days=-3, seconds=5, microseconds=7),
    dt.timedelta.max,
    decimal.Decimal("1.10"),
    decimal.Decimal("-0"),
    decimal.Decimal("NaN"),
    decimal.Decimal("-Infinity"),
    decimal.Decimal("1E+1000"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    Color.RED,
    Color.PAIR,
    Level.HIGH,
    Kind.TOOL,
    Perm.READ | Perm.WRITE,
    Point(1, 2.5),
    Slotted(1, [2, 3]),
    Derived(4),
    Pair(1, "one"),
    [Pair(2, "two"), {"p": Point(0, 0.0)}],
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_round_trip_keeps_value_and_type(value: Any) -> None:
    round_trip(value)


def test_nested_dataclass_round_trip() -> None:
    leaf = Doc(
        id=uuid.UUID(int=7),
        created=dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        color=Color.PAIR,
        span=(3, 9),
        origin=Point(1, -1.0),
        tags=frozenset({"a", "b"}),
    )
    doc = Doc(
        id=uuid.UUID(int=1),
        created=dt.datetime(2024, 1, 1, tzinfo=PARIS),
        color=Color.RED,
        span=(0, 1),
        origin=Point(0, 0.5),
        children=[leaf, leaf],
        note="root",
    )
    back = round_trip({"result": doc})["result"]
    assert back == doc
    assert type(back.span) is tuple
    assert type(back.children[1].origin) is Point
    assert back.children[0].created.tzinfo is UTC
    assert back.created.tzinfo is PARIS


def test_dataclass_is_rebuilt_without_running_init() -> None:
    value = Derived(3)
    value.doubled = 100  # state after creation is what gets restored
    assert round_trip(value).doubled == 100


def test_pydantic_model_round_trip() -> None:
    user = User(
        id=uuid.UUID(int=5),
        name="Ada",
        joined=dt.datetime(2024, 3, 1, tzinfo=UTC),
        address=Address(city="Paris", zip_code="75001"),
        tags=("a", "b"),
        level=Level.HIGH,
        scores={"x": 1.5},
    )
    back = codec.decode(codec.encode([user]))[0]
    assert type(back) is User
    assert back == user
    assert type(back.address) is Address
    assert type(back.tags) is tuple
    strict = codec.decode(codec.encode(Strict(a=2)))
    assert strict == Strict(a=2)
    assert strict.double == 4


def test_sets_encode_the_same_in_any_order() -> None:
    a = {"alpha", "beta", "gamma", 1, (2, 3)}
    b = {(2, 3), 1, "gamma", "beta", "alpha"}
    assert codec.encode(a) == codec.encode(b)
    assert digest(codec.encode(a)) == digest(codec.encode(b))


def test_digest() -> None:
    first = digest(codec.encode({"q": "flights"}))
    assert len(first) == 16
    assert first == digest(codec.encode({"q": "flights"}))
    assert first != digest(codec.encode({"q": "hotels"}))


def test_decode_accepts_any_bytes_like() -> None:
    data = codec.encode({"a": [1, 2]})
    assert codec.decode(memoryview(data)) == {"a": [1, 2]}
    assert codec.decode(bytearray(data)) == {"a": [1, 2]}


def test_bytearray_reads_back_as_bytes() -> None:
    assert codec.decode(codec.encode(bytearray(b"ab"))) == b"ab"


def test_large_bodies_are_compressed() -> None:
    value = ["the same sentence again and again"] * 200
    data = codec.encode(value)
    assert data[0] == 0x02
    assert len(data) < 1000
    assert codec.decode(data) == value
    assert Codec(compress_threshold=1 << 30).encode(value)[0] == 0x01


# -- errors on encoding --------------------------------------------------------------------------


def test_error_names_the_path_type_and_fix() -> None:
    with pytest.raises(SerializationError) as info:
        codec.encode({"docs": [1, 2, 3, object()]}, root="result")
    message = str(info.value)
    assert 'result["docs"][3]' in message
    assert "object" in message
    assert "dataclass" in message
    assert "pydantic" in message
    assert "allow_pickle=True" in message
    assert info.value.path == 'result["docs"][3]'


def test_error_path_through_dataclass_fields() -> None:
    docs = [Chunk("a", [0.5]), Chunk("b", Plain(1))]
    with pytest.raises(SerializationError) as info:
        codec.encode({"docs": docs}, root="result")
    assert info.value.path == 'result["docs"][1].embedding'
    assert f"{__name__}.Plain" in str(info.value)


@pytest.mark.parametrize(
    ("value", "path", "words"),
    [
        (object(), "value", "object"),
        ((1, [2, {"k": {3: object()}}]), 'value[1][1]["k"][3]', "object"),
        ({'say "hi"': object()}, r'value["say \"hi\""]', "object"),
        ({Opaque()}, "value<element", "Opaque"),
        ({(1, Opaque()): 1}, "value<key (1,", "Opaque"),
        (Pair(1, Plain(2)), "value.right", "Plain"),  # type: ignore[arg-type]
        (Color, "value", "EnumType"),
        (User.model_construct(name=Plain(1)), "value.name", "Plain"),
        ("bad \ud800 surrogate", "value", "surrogate"),
        (dt.datetime(2024, 1, 1, tzinfo=OddZone()), "value", "time zone"),
        (lambda: 1, "value", "function"),
    ],
)
def test_error_paths(value: Any, path: str, words: str) -> None:
    with pytest.raises(SerializationError) as info:
        codec.encode(value)
    assert info.value.path.startswith(path)
    assert words in str(info.value)


def test_self_referencing_value() -> None:
    loop: list[Any] = [1]
    loop.append({"again": loop})
    with pytest.raises(SerializationError) as info:
        codec.encode(loop)
    assert info.value.path == 'value[1]["again"]'
    assert "contains itself" in str(info.value)


def test_class_defined_in_a_function_is_refused_up_front() -> None:
    @dataclasses.dataclass
    class Local:
        a: int

    with pytest.raises(SerializationError, match="module level") as info:
        codec.encode({"x": Local(1)})
    assert info.value.path == 'value["x"]'


def test_failed_encoding_leaves_the_codec_usable() -> None:
    for _ in range(3):
        with pytest.raises(SerializationError):
            codec.encode((1, (2, object())))
    round_trip((1, (2, 3)))


def test_concurrent_use_from_threads() -> None:
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for i in range(300):
                value = (seed, i, [(seed, {i}), dt.date(2024, 1, 1 + i % 28)], Point(i, 0.5))
                assert same(codec.decode(codec.encode(value)), value)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


# -- pickle --------------------------------------------------------------------------------------


def test_pickle_is_off_by_default() -> None:
    with pytest.raises(SerializationError, match="allow_pickle"):
        codec.encode(Plain(1))


def test_pickle_opt_in_round_trip() -> None:
    assert pickling.decode(pickling.encode({"p": Plain(3)})) == {"p": Plain(3)}
    # Everything with a rule of its own is still encoded without pickle.
    assert pickling.encode(Point(1, 2.0)) == codec.encode(Point(1, 2.0))


def test_pickle_failure_names_the_path() -> None:
    with pytest.raises(SerializationError, match="pickle failed") as info:
        pickling.encode({"lock": [threading.Lock()]})
    assert info.value.path == 'value["lock"][0]'


def test_a_pickle_is_never_loaded_when_pickle_is_off() -> None:
    data = pickling.encode([Sneaky()])
    UNPICKLED.clear()
    with pytest.raises(SerializationError, match="pickle is disabled") as info:
        codec.decode(data)
    assert "run code" in str(info.value)
    assert UNPICKLED == []
    assert pickling.decode(data) == ["ran"]
    assert UNPICKLED == ["ran"]


# -- errors on decoding --------------------------------------------------------------------------


def frame(body: bytes, header: int = 0x01) -> bytes:
    """A well-formed frame around ``body``: what a future or foreign writer could produce."""
    head = bytes((header,))
    return head + body + zlib.crc32(head + body).to_bytes(4, "little")


def test_empty_and_truncated_payloads() -> None:
    for data in (b"", b"\x01", b"\x01\xc0\x00\x00"):
        with pytest.raises(SerializationError, match="truncated"):
            codec.decode(data)


def test_unknown_format_byte() -> None:
    with pytest.raises(SerializationError, match="newer version"):
        codec.decode(b"\x09" + codec.encode([1, 2])[1:])


def test_unknown_ext_type() -> None:
    data = frame(msgpack.packb(msgpack.ExtType(99, b"?")))
    with pytest.raises(SerializationError, match="newer version"):
        codec.decode(data)


def test_unknown_or_wrong_class_is_refused() -> None:
    body = msgpack.packb(["no_such_module_xyz", "Gone", {"a": 1}])
    with pytest.raises(SerializationError, match=r"no_such_module_xyz\.Gone") as info:
        codec.decode(frame(msgpack.packb(msgpack.ExtType(12, body))))
    assert "register_type(no_such_module_xyz.Gone)" in str(info.value)
    codec.encode(Color.RED)  # known from now on, but it is not a dataclass
    body = msgpack.packb([__name__, "Color", {"a": 1}])
    with pytest.raises(SerializationError, match="not a dataclass"):
        codec.decode(frame(msgpack.packb(msgpack.ExtType(12, body))))


def test_dataclass_fields_added_or_removed_since() -> None:
    origin = Point(0, 0)
    codec.encode([Derived(1), Doc(uuid.UUID(int=0), dt.datetime.min, Color.RED, (0, 0), origin)])
    stored = {"a": 1, "gone": 2}  # "gone" was removed since; "doubled" has no default
    body = msgpack.packb([__name__, "Derived", stored])
    with pytest.raises(SerializationError, match="doubled"):
        codec.decode(frame(msgpack.packb(msgpack.ExtType(12, body))))
    body = msgpack.packb([__name__, "Doc", {"id": None, "created": None, "color": None,
                                            "span": None, "origin": None}])  # fmt: skip
    doc = codec.decode(frame(msgpack.packb(msgpack.ExtType(12, body))))
    assert doc.children == [] and doc.note is None and doc.tags == frozenset()


def test_enum_member_that_no_longer_exists() -> None:
    codec.encode(Level.LOW)  # classes encoded in this process are known
    body = msgpack.packb([__name__, "Level", 99])
    with pytest.raises(SerializationError, match="no longer exists"):
        codec.decode(frame(msgpack.packb(msgpack.ExtType(11, body))))


def test_import_undying_codec_does_not_import_pydantic() -> None:
    code = "import sys, undying.codec; print('pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- properties ----------------------------------------------------------------------------------

keys = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**64, max_value=2**200)
    | st.integers(min_value=-(2**200), max_value=-(2**63) - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.binary(max_size=30)
)
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=5).map(tuple)
        | st.dictionaries(keys | st.tuples(keys, keys), inner, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(values)
def test_round_trip_of_random_values(value: Any) -> None:
    round_trip(value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values, st.booleans(), st.data())
def test_any_corruption_is_detected(value: Any, big: bool, data: st.DataObject) -> None:
    if big:  # a compressed frame
        value = [value, "padding that compresses well " * 200]
    encoded = codec.encode(value)
    assert encoded[0] in ((0x02, 0x04) if big else (0x01, 0x03))
    where = data.draw(st.integers(0, len(encoded) - 1), label="where")
    flip = data.draw(st.integers(1, 255), label="flip")
    damaged = bytearray(encoded)
    damaged[where] ^= flip  # flip is not 0, so the byte really changes
    with pytest.raises(SerializationError):
        codec.decode(bytes(damaged))
    cut = data.draw(st.integers(0, len(encoded) - 1), label="cut")
    with pytest.raises(SerializationError):
        codec.decode(encoded[:cut])


# -- the format ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_json_like_values_encode_exactly_as_before(value: Any) -> None:
    # The format of plain values never changes, so neither do their argument digests.
    assert Codec(compress_threshold=1 << 62).encode(value) == frame(msgpack.packb(value))


def test_containers_are_tagged_arrays_in_one_frame() -> None:
    data = Codec(compress_threshold=1 << 62).encode((1, Point(2, 3.0)))
    assert data[0] == 0x03  # holds tags: decoded with the list hook
    body = msgpack.unpackb(data[1:-4], raw=False)
    assert [type(part) for part in body] == [msgpack.ExtType, int, list]  # nothing nested as bytes
    assert codec.encode(dt.date(2024, 1, 1))[0] == 0x01  # leaf ext types need no hook
    assert codec.encode([(1,)] * 500)[0] == 0x04  # compressed, with tags


def test_frames_written_before_tags_still_decode() -> None:
    # Written by undying 0.1 (tuples, sets and keys as nested ext types).
    old = bytes.fromhex(
        "0186a174d7029201d6029202a178a173c70303920102a26673c7030491a161a164c70c0597ce000b46bf0000"
        "00000000a3626967c70901400000000000000000a16b81c70302920102a97475706c65206b6579f1bfe317"
    )
    assert codec.decode(old) == {
        "t": (1, (2, "x")),
        "s": {1, 2},
        "fs": frozenset({"a"}),
        "d": dt.datetime(2024, 5, 1, tzinfo=UTC),
        "big": 2**70,
        "k": {(1, 2): "tuple key"},
    }
    compressed = bytes.fromhex("0228b52ffd606b0f85000030dc0064d9287802003bd0540f94a0088324c0d1")
    assert codec.decode(compressed) == ["x" * 40] * 100


def zstd_frame(declared: int | None, data: bytes) -> bytes:
    """A zstd frame holding ``data`` in one raw block, whose header declares ``declared`` bytes
    (no size at all when None): what a damaged or planted payload could hold."""
    if declared is None:
        header = bytes((0x00, 0x58))  # no content size, window descriptor
    else:
        header = bytes((0xC0, 0x58)) + declared.to_bytes(8, "little")  # 8-byte content size
    block = (1 | (len(data) << 3)).to_bytes(3, "little")  # last block, raw
    return b"\x28\xb5\x2f\xfd" + header + block + data


def test_a_zstd_frame_is_never_decompressed_beyond_what_the_format_allows() -> None:
    import zstandard

    honest = zstd_frame(3, msgpack.packb([1, 2]))
    assert zstandard.ZstdDecompressor().decompress(honest) == msgpack.packb([1, 2])
    assert codec.decode(frame(honest, header=0x02)) == [1, 2]
    # 64 KB of frame claiming 2 GiB: refused from its header, in a process that could not even
    # allocate that much.
    bomb = frame(zstd_frame(2**31, b"\x00" * 65536), header=0x02)
    code = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from undying.codec import Codec
from undying.errors import SerializationError
try:
    Codec().decode(bytes.fromhex(sys.stdin.read()))
except SerializationError as exc:
    print("refused:", exc)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], input=bomb.hex(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "claims 2147483648 bytes (at most 16379 expected)" in out.stdout
    for header in (0x02, 0x04):
        with pytest.raises(SerializationError, match="does not record its size"):
            codec.decode(frame(zstd_frame(None, msgpack.packb([1])), header=header))
        with pytest.raises(SerializationError, match="claims 16380 bytes"):
            codec.decode(frame(zstd_frame(16380, msgpack.packb([1])), header=header))
