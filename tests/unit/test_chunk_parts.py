"""Chunked payloads, format 2: a value cut at its parts, each message stored once."""

from __future__ import annotations

import hashlib
import random

import pytest
from test_chunking import Store, _text

from undying import chunking
from undying.codec import Codec, uncompressed, zstd_compress
from undying.errors import SerializationError

_codec = Codec()


def _hex(turn: int) -> dict[str, object]:
    digests = "".join(hashlib.sha256(f"{turn}:{i}".encode()).hexdigest() for i in range(16))
    return {"role": "assistant" if turn % 2 else "user", "turn": turn, "content": digests}


def _split(data: bytes, store: Store) -> bytes:
    ref, blobs = chunking.split(data)
    store.put(blobs)
    assert chunking.join(ref, store.load) == (uncompressed(data) or data)
    assert chunking.referenced(ref, store.load) == set(blobs)
    return ref


def _cold(data: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """The split of ``data`` with no earlier split remembered."""
    saved = list(chunking._splits)
    chunking._splits.clear()
    try:
        return chunking.split(data)
    finally:
        chunking._splits[:] = saved


def test_a_growing_history_round_trips_each_turn() -> None:
    store = Store()
    history: list[object] = []
    for turn in range(120):
        history.append(_hex(turn))
        frame = _codec.encode(history)
        ref = _split(frame, store)
        if len(frame) > chunking.CHUNK_THRESHOLD:
            assert ref[0] == 2
            assert len(ref) < 700


def test_remembering_the_last_split_changes_nothing() -> None:
    """Work reused from the previous turn gives the same reference and blobs as a cold split."""
    rng = random.Random(5)
    history: list[object] = []
    for turn in range(150):
        history.append(rng.choice([_hex(turn), turn, "s" * rng.randrange(0, 40_000), b"b" * 700]))
        if rng.random() < 0.1:
            history[rng.randrange(len(history))] = f"edited {turn}"
        if rng.random() < 0.05:
            history.pop(0)
        for value in (history, {"messages": history, "turn": turn}, (turn, history)):
            frame = _codec.encode(value)
            assert chunking.split(frame) == _cold(frame)


def test_each_message_is_stored_once() -> None:
    store = Store()
    messages = [_hex(turn) for turn in range(400)]
    sizes = {}
    for turn in range(1, len(messages) + 1):
        _split(_codec.encode(messages[:turn]), store)
        _split(_codec.encode({"messages": messages[:turn], "turn": turn}), store)
        sizes[turn] = store.size
    once = sum(len(zstd_compress(_codec.encode(m))) for m in messages[200:])
    # turns 201..400 add one blob per message, plus level-1 nodes and their tree
    assert sizes[400] - sizes[200] < 1.2 * once, (sizes[400] - sizes[200], once)
    assert sizes[400] < 1.5 * once * 2


def test_frames_that_are_no_plain_container_keep_format_1() -> None:
    big_string = _codec.encode(_text(random.Random(1), 100_000))
    assert chunking.split(big_string)[0][0] == 1
    assert chunking.split(random.Random(2).randbytes(50_000))[0][0] == 1


def test_a_compressed_frame_is_cut_as_its_uncompressed_equivalent() -> None:
    """A history of a few KiB is a zstd frame; cut per message, it dedups from the start."""
    store = Store()
    history = [_hex(turn) for turn in range(5)]
    frame = _codec.encode(history)
    assert frame[0] == 0x02
    ref, blobs = chunking.split(frame)
    store.put(blobs)
    assert ref[0] == 2
    assert _codec.decode(chunking.join(ref, store.load)) == history
    longer = chunking.split(_codec.encode([*history, _hex(5)]))[1]
    assert len(set(longer) - set(blobs)) <= 3  # the new message and a node or two
    damaged = frame[:-1] + bytes([frame[-1] ^ 1])
    assert chunking.split(damaged)[0][0] == 1  # kept as it is, refused when read


def test_format_1_references_still_read_back() -> None:
    store = Store()
    frame = _codec.encode([_hex(turn) for turn in range(100)])
    ref, blobs = chunking._split_content(frame)  # what undying wrote before format 2
    store.put(blobs)
    assert ref[0] == 1
    assert chunking.join(ref, store.load) == frame
    assert chunking.referenced(ref, store.load) == set(blobs)


@pytest.mark.parametrize("kind", ["chunk", "tree node"])
def test_a_missing_blob_raises(kind: str) -> None:
    store = Store()
    ref = _split(_codec.encode([_hex(turn) for turn in range(300)]), store)
    assert ref[1] >= 1  # a tree
    key = next(k for k, b in store.blobs.items() if (b[0] == 0x02) == (kind == "tree node"))
    del store.blobs[key]
    with pytest.raises(SerializationError, match=f"{kind} {key.hex()} is missing"):
        chunking.join(ref, store.load)


def test_a_damaged_reference_or_part_is_refused() -> None:
    store = Store()
    frame = _codec.encode([_hex(turn) for turn in range(300)])
    ref = _split(frame, store)
    for cut in (0, 5, 14, 30, len(ref) - 1):
        with pytest.raises(SerializationError):
            chunking.join(ref[:cut], store.load)
    with pytest.raises(SerializationError, match="corrupt"):
        chunking.join(ref + b"x", store.load)
    longer = ref[:3] + (len(frame) + 1).to_bytes(8, "little") + ref[11:]
    with pytest.raises(SerializationError, match="corrupt"):
        chunking.join(longer, store.load)
    part = next(k for k, b in store.blobs.items() if b[0] != 0x02)
    store.blobs[part] = store.blobs[part][:-1] + bytes([store.blobs[part][-1] ^ 1])
    with pytest.raises(SerializationError, match="corrupt"):
        chunking.join(ref, store.load)
