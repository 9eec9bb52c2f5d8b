"""Content-defined chunking: round trips, dedup of a growing history, and damage detection."""

from __future__ import annotations

import random
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from undying import chunking, codec
from undying.codec import Codec
from undying.errors import SerializationError


class Store:
    """A blob table: INSERT OR IGNORE on put, one batch per load, every batch recorded."""

    def __init__(self) -> None:
        self.blobs: dict[bytes, bytes] = {}
        self.batches: list[list[bytes]] = []

    def put(self, blobs: Mapping[bytes, bytes]) -> None:
        for key, blob in blobs.items():
            self.blobs.setdefault(key, blob)

    def load(self, keys: list[bytes]) -> dict[bytes, bytes]:
        self.batches.append(keys)
        return {key: self.blobs[key] for key in keys if key in self.blobs}

    @property
    def size(self) -> int:
        return sum(len(blob) for blob in self.blobs.values())


_WORDS = ("agent", "tool", "call", "the", "result", "of", "search", "flight", "hotel", "price",
          "user", "asked", "for", "a", "summary", "and", "then", "booked", "it")  # fmt: skip


def _text(rng: random.Random, size: int) -> str:
    out: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(_WORDS) if rng.random() < 0.8 else f"{rng.getrandbits(32):x}"
        out.append(word)
        length += len(word) + 1
    return " ".join(out)


def _round_trip(data: bytes) -> Store:
    store = Store()
    ref, blobs = chunking.split(data)
    store.put(blobs)
    assert chunking.join(ref, store.load) == data
    assert chunking.referenced(ref, store.load) == set(blobs)
    assert len(ref) <= 200
    return store


@pytest.mark.parametrize(
    "size", [0, 1, 127, 128, 129, 1000, 16 * 1024, 16 * 1024 + 1, 100_000, 1_000_000, 3_000_000]
)
def test_round_trip_random_bytes(size: int) -> None:
    _round_trip(random.Random(size).randbytes(size))


@pytest.mark.parametrize("size", [50_000, 3_000_000])
def test_round_trip_compressible(size: int) -> None:
    data = _text(random.Random(size), size).encode()
    store = _round_trip(data)
    assert store.size < size / 2  # chunks are compressed


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=40_000))
def test_round_trip_any_bytes(data: bytes) -> None:
    _round_trip(data)


@settings(max_examples=10, deadline=None)
@given(st.integers(min_value=0, max_value=3_000_000), st.integers(min_value=0))
def test_round_trip_random_sizes(size: int, seed: int) -> None:
    _round_trip(random.Random(seed).randbytes(size))


def test_split_is_deterministic() -> None:
    data = random.Random(7).randbytes(500_000)
    assert chunking.split(data) == chunking.split(bytes(data))


def test_join_loads_one_batch_per_level() -> None:
    data = random.Random(8).randbytes(3_000_000)
    store = Store()
    ref, blobs = chunking.split(data)
    store.put(blobs)
    chunking.join(ref, store.load)
    height = ref[2]
    assert height >= 1
    assert len(store.batches) == height + 1
    for batch in store.batches:
        assert len(batch) == len(set(batch))


def test_growing_history_is_stored_about_linearly() -> None:
    """Each turn's whole history is encoded and split; the union of blobs stays ~linear."""
    rng = random.Random(42)
    messages = [
        {"role": ("user", "assistant")[i % 2], "content": _text(rng, 1000)} for i in range(1000)
    ]
    encoder = Codec()
    store = Store()
    sizes: dict[int, int] = {}
    raw = 0
    for turn in range(1, 1001):
        payload = encoder.encode(messages[:turn])
        raw = len(payload)
        if raw > chunking.CHUNK_THRESHOLD:
            ref, blobs = chunking.split(payload)
            store.put(blobs)
        if turn in (100, 500, 1000):
            sizes[turn] = store.size
    assert raw > 1_000_000
    assert sizes[1000] < 2_500_000
    assert sizes[1000] / sizes[500] < 2.3
    assert chunking.join(ref, store.load) == payload


def test_an_edit_in_the_middle_adds_few_blobs() -> None:
    data = bytearray(_text(random.Random(9), 1_000_000).encode())
    _, before = chunking.split(bytes(data))
    data[500_000:500_010] = b"0123456789"
    _, after = chunking.split(bytes(data))
    assert len(set(after) - set(before)) <= 6  # a chunk or two, and the nodes above them


def _split_into_store(size: int = 3_000_000) -> tuple[bytes, bytes, Store]:
    """Half text (stored compressed), half random bytes (stored raw)."""
    rng = random.Random(size)
    data = _text(rng, size // 2).encode() + rng.randbytes(size // 2)
    ref, blobs = chunking.split(data)
    store = Store()
    store.put(blobs)
    return data, ref, store


def _kind(blob: bytes) -> str:
    return "node" if blob[0] == 0x02 else "chunk"


@pytest.mark.parametrize("kind", ["chunk", "node"])
def test_a_damaged_blob_is_detected(kind: str) -> None:
    _, ref, store = _split_into_store()
    rng = random.Random(3)
    for key in rng.sample(sorted(k for k, b in store.blobs.items() if _kind(b) == kind), 5):
        blob = bytearray(store.blobs[key])
        original = bytes(blob)
        where = rng.randrange(len(blob))
        blob[where] ^= 1 << rng.randrange(8)
        store.blobs[key] = bytes(blob)
        with pytest.raises(SerializationError, match="corrupt"):
            chunking.join(ref, store.load)
        store.blobs[key] = original[: rng.randrange(len(original))]
        with pytest.raises(SerializationError, match="corrupt"):
            chunking.join(ref, store.load)
        store.blobs[key] = original


def test_a_swapped_blob_is_detected() -> None:
    _, ref, store = _split_into_store()
    first, second = sorted(k for k, b in store.blobs.items() if _kind(b) == "chunk")[:2]
    store.blobs[first] = store.blobs[second]
    with pytest.raises(SerializationError, match="does not match its hash"):
        chunking.join(ref, store.load)


@pytest.mark.parametrize("kind", ["chunk", "node"])
def test_a_missing_blob_is_reported(kind: str) -> None:
    _, ref, store = _split_into_store()
    key = next(k for k, b in store.blobs.items() if _kind(b) == kind)
    del store.blobs[key]
    with pytest.raises(
        SerializationError,
        match=f"{kind if kind == 'chunk' else 'tree node'} {key.hex()} is missing",
    ):
        chunking.join(ref, store.load)


def test_a_bad_reference_is_refused() -> None:
    data, ref, store = _split_into_store(100_000)
    assert chunking.join(ref, store.load) == data
    with pytest.raises(SerializationError, match="newer version"):
        chunking.join(b"\x07" + ref[1:], store.load)
    for cut in (0, 5, 11, 30, len(ref) - 1):
        with pytest.raises(SerializationError):
            chunking.join(ref[:cut], store.load)
    longer = ref[:3] + (len(data) + 1).to_bytes(8, "little") + ref[11:]
    with pytest.raises(SerializationError, match="corrupt"):
        chunking.join(longer, store.load)


def test_small_payloads_live_in_the_reference() -> None:
    ref, blobs = chunking.split(b"hello")
    assert blobs == {}
    assert chunking.join(ref, lambda keys: {}) == b"hello"
    assert chunking.referenced(ref, lambda keys: {}) == set()


def test_codec_leaves_chunked_frames_uncompressed() -> None:
    """A whole-frame zstd stream would defeat dedup, so big frames are left to chunking."""
    assert chunking.CHUNK_THRESHOLD == codec.CHUNK_THRESHOLD
    text = _text(random.Random(1), 100_000)
    frame = Codec().encode(text)
    assert len(frame) > chunking.CHUNK_THRESHOLD
    assert frame[0] == 0x01
    small = Codec().encode(text[:10_000])
    assert small[0] == 0x02
    assert len(small) < 10_000
