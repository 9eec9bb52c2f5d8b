"""Deep values: one nesting limit for encoding and decoding, and no decoder that a value can crash.

A C stack overflow kills the process (SIGSEGV) rather than raising, so every decode that could
overflow runs in a subprocess and the test reads its exit status and report.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import depth_limits
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from undying import codec_legacy
from undying.codec import MAX_DEPTH, Codec
from undying.errors import SerializationError

HERE = Path(__file__).resolve().parent
codec = Codec()


def run_python(code: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    return subprocess.run(
        [sys.executable, "-c", code], input=stdin, capture_output=True, env=env, timeout=120
    )


def frame(body: bytes, header: int = 0x01) -> bytes:
    head = bytes((header,))
    return head + body + zlib.crc32(head + body).to_bytes(4, "little")


def test_values_at_the_limit_round_trip_and_one_level_more_is_refused_when_encoding() -> None:
    out = subprocess.run(
        [sys.executable, str(HERE / "depth_limits.py")], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["max_depth"] == MAX_DEPTH == 1000
    kinds = [k for k in report if isinstance(report[k], dict) and "at the limit" in report[k]]
    assert len(kinds) == 9  # lists, lists around a leaf, dicts, tuples, three chains, keys, mix
    for kind in kinds:
        at, past = report[kind]["at the limit"], report[kind]["past the limit"]
        assert at["encoded"] and at["same"], (kind, at)
        assert not past["encoded"], (kind, past)
        assert "nested more than 1000 levels deep" in past["error"], (kind, past)
        assert past["path_length"] > 2000, (kind, past)  # the path leads down to the culprit
    assert report["dataclass chain"]["at the limit"]["type"] == "Turn"
    assert report["pydantic chain"]["at the limit"]["type"] == "Node"
    assert not report["2000 deep lists"]["encoded"]
    for label, outcome in report["crafted"].items():  # far deeper than any encoder writes
        assert outcome.startswith("refused: stored payload nests values deeper"), label


def test_lists_600_deep_round_trip() -> None:
    value: Any = ["leaf"]
    for _ in range(599):
        value = [value]
    data = codec.encode(value)
    assert codec.encode(codec.decode(data)) == data


def test_the_encoder_used_to_accept_what_the_decoder_refused() -> None:
    # 1,025 nested empty lists: msgpack's packer takes them, its unpacker's stack does not.
    value: Any = []
    for _ in range(1024):
        value = [value]
    with pytest.raises(SerializationError, match="nested more than 1000 levels"):
        codec.encode(value)


def legacy_tuples(depth: int) -> bytes:
    """``depth`` nested tuples as undying 0.1 wrote them: each an ext type holding packed bytes."""
    data = msgpack.packb(msgpack.ExtType(2, msgpack.packb([])))
    for _ in range(depth - 1):
        data = msgpack.packb(msgpack.ExtType(2, b"\x91" + data))
    return frame(data)


def test_old_frames_nested_200_deep_are_refused_instead_of_crashing_the_process() -> None:
    code = """
import sys
from undying.codec import Codec
from undying.errors import SerializationError
try:
    Codec().decode(sys.stdin.buffer.read())
    print("decoded")
except SerializationError as exc:
    print("refused:", exc)
"""
    out = run_python(code, legacy_tuples(200))
    assert out.returncode == 0, (out.returncode, out.stderr[-500:])  # was -11, SIGSEGV
    assert b"refused: stored payload nests tuples" in out.stdout


def test_old_frames_decode_up_to_their_own_nesting_limit() -> None:
    limit = codec_legacy.MAX_NESTING
    value = codec.decode(legacy_tuples(limit))
    for _ in range(limit - 1):
        assert type(value) is tuple and len(value) == 1
        value = value[0]
    assert value == ()
    with pytest.raises(SerializationError, match=f"more than {limit} levels"):
        codec.decode(legacy_tuples(limit + 1))


def test_sets_inside_members_of_sets_have_a_bounded_nesting() -> None:
    value: Any = frozenset({1})
    for _ in range(7):
        value = frozenset({value})
    assert codec.decode(codec.encode(value)) == value
    with pytest.raises(SerializationError, match="sets nest inside members of sets more than 8"):
        codec.encode(frozenset({value}))


# -- fuzz: whatever encode accepts, a fresh process decodes --------------------------------------

hashable = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**64, max_value=2**130)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10)
    | st.dates()
    | st.uuids()
    | st.sampled_from(list(depth_limits.Mood))
)
leaves = (
    hashable
    | st.datetimes(timezones=st.none() | st.just(dt.UTC))
    | st.times()
    | st.timedeltas()
    | st.decimals(allow_nan=False)
)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = hashable | st.tuples(hashable, hashable) | st.frozensets(hashable, max_size=3)
    return (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(keys, inner, max_size=4)
        | st.sets(hashable, max_size=4)
        | st.builds(depth_limits.Turn, st.text(max_size=5), inner)
        | st.builds(lambda text, prev: depth_limits.Node(text=text, prev=prev), st.text(), inner)
        | st.builds(depth_limits.Link, inner, st.integers(0, 9))
    )


values = st.recursive(leaves, _containers, max_leaves=30)
deep_values = st.tuples(
    values,
    st.lists(st.integers(0, len(depth_limits.WRAPS) - 1), min_size=MAX_DEPTH - 8,
             max_size=MAX_DEPTH + 1),
).map(lambda pair: _wrap(*pair))  # fmt: skip


def _wrap(value: Any, wraps: list[int]) -> Any:
    for index in wraps:
        value = depth_limits.WRAPS[index](value)
    return value


DECODER = """
import struct, sys, depth_limits, undying
from undying.codec import Codec
for cls in (depth_limits.Turn, depth_limits.Node, depth_limits.Link, depth_limits.Mood):
    undying.register_type(cls)
codec, data, ok, at = Codec(), sys.stdin.buffer.read(), 0, 0
while at < len(data):
    (size,) = struct.unpack_from("<I", data, at)
    frame = data[at + 4 : at + 4 + size]
    at += 4 + size
    assert codec.encode(codec.decode(frame)) == frame, frame[:60]
    ok += 1
print(ok)
"""


def test_whatever_encode_accepts_a_fresh_process_decodes() -> None:
    frames: list[bytes] = []

    def accept(value: Any) -> None:
        with contextlib.suppress(SerializationError):  # refused up front: nothing journaled
            frames.append(codec.encode(value))

    @settings(max_examples=400, deadline=None, database=None)
    @given(values)
    def shallow(value: Any) -> None:
        accept(value)

    @settings(
        max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(deep_values)
    def deep(value: Any) -> None:
        accept(value)

    shallow()
    deep()
    long = sum(1 for data in frames if len(data) > MAX_DEPTH)
    assert len(frames) > 300 and long >= 10
    batch = b"".join(struct.pack("<I", len(data)) + data for data in frames)
    out = run_python(DECODER, batch)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert int(out.stdout) == len(frames)
