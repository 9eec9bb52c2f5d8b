"""Content-defined chunking, so that a payload that keeps growing is stored once, not every turn.

An agent step often returns its whole message history, one message longer each turn. Stored
whole, 1,000 turns of 1 KB messages cost ~500 MB; split here, ~1.5 MB (measured): each part of the
history is stored once, plus the last chunk, rewritten as it fills up.

How a payload is cut:

* The first :data:`_PREFIX` bytes stay inline in the root reference. They hold the msgpack
  headers that count the history's items (and any ext length prefixes around it), which change
  every turn; as a chunk, they would make a new first chunk and a new first tree node each turn.
* The rest is cut by FastCDC (``pyfastcdc``) into chunks of ~4 KiB on average. A cut depends only
  on nearby content, so appending data leaves every earlier chunk unchanged. Each chunk is stored
  zstd-compressed (raw when that is not smaller) under the hash of its content.
* The list of chunk hashes is itself cut into nodes, again by content: a node ends after a hash
  whose first two bytes fall below ``65536 / _FANOUT``. The node hashes are grouped the same way,
  level after level, up to one root. A flat hash list per payload would grow with the history and
  make storage quadratic again; with the tree, a turn adds only the nodes along its right edge.
* The last chunk is kept out of the tree and named in the root reference: while a history grows,
  the last chunk is the part that changes every turn, and out of the tree it does not drag a new
  rightmost node (and its ancestors) along each time.

Blobs are keyed by blake2b-128 with distinct personalisation for chunks and nodes, so a node can
never be read back as a chunk. :func:`join` checks every blob against its key, so a missing or
damaged blob raises :class:`~undying.errors.SerializationError` instead of returning wrong bytes.

Formats (a new layout needs a new ``_VERSION``)::

    root ref = version:u8 | hashes:u8 | height:u8 | length:u64le | tree root? | last chunk? | prefix
    chunk    = 0x00 | raw bytes        or        0x01 | zstd frame
    node     = 0x02 | level:u8 | 16-byte hashes of level-1 nodes, or of chunks when level is 1

``hashes`` is 0 (everything fits in the prefix), 1 (one chunk) or 2 (a tree of all chunks but
the last, then the last); ``height`` is the tree root's level, 0 when the tree is a single chunk.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from pyfastcdc import FastCDC

from undying.codec import CHUNK_THRESHOLD, zstd_compress, zstd_decompress
from undying.errors import SerializationError

__all__ = ["CHUNK_THRESHOLD", "Loader", "join", "referenced", "split"]

Loader = Callable[[list[bytes]], Mapping[bytes, bytes]]
"""Fetches the stored blobs for many hashes at once; absent hashes are simply left out."""

_VERSION: Final = 1
_HASH_SIZE: Final = 16
_PREFIX: Final = 128

_AVG_CHUNK: Final = 4096
_MIN_CHUNK: Final = 1024
_MAX_CHUNK: Final = 16 * 1024
# Normalisation level 3 keeps chunk sizes close to the average: fewer long chunks means less to
# rewrite while the last chunk of a growing payload fills up.
_NORMALIZATION: Final = 3

_FANOUT: Final = 32
_MAX_FANOUT: Final = 4 * _FANOUT
_BOUNDARY: Final = 65536 // _FANOUT

_RAW: Final = 0x00
_ZSTD: Final = 0x01
_NODE: Final = 0x02

_HEAD: Final = struct.Struct("<BBBQ")
_CHUNK_PERSON: Final = b"undying.chunk"
_NODE_PERSON: Final = b"undying.node"

# A payload that grows every turn is cut into the same chunks as last turn, bar the last few;
# remembering recent compressions makes re-splitting it cost hashing, not zstd.
_MEMO_LIMIT: Final = 16 * 1024 * 1024
_memo: OrderedDict[bytes, bytes] = OrderedDict()
_memo_size = 0
_memo_lock = threading.Lock()


def _chunk_key(raw: bytes | memoryview) -> bytes:
    return hashlib.blake2b(raw, digest_size=_HASH_SIZE, person=_CHUNK_PERSON).digest()


def _node_key(blob: bytes) -> bytes:
    return hashlib.blake2b(blob, digest_size=_HASH_SIZE, person=_NODE_PERSON).digest()


def _stored_chunk(key: bytes, raw: memoryview) -> bytes:
    global _memo_size
    with _memo_lock:
        blob = _memo.get(key)
        if blob is not None:
            _memo.move_to_end(key)
            return blob
    packed = zstd_compress(raw)
    blob = bytes((_ZSTD,)) + packed if len(packed) < len(raw) else bytes((_RAW,)) + raw
    with _memo_lock:
        if key not in _memo:
            _memo[key] = blob
            _memo_size += len(blob)
            while _memo_size > _MEMO_LIMIT:
                _memo_size -= len(_memo.popitem(last=False)[1])
    return blob


def split(data: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """Cut ``data`` into content-defined blobs.

    Returns ``(root_ref, blobs)``: ``root_ref`` (at most ~170 bytes) is what the caller keeps in
    place of the payload; ``blobs`` maps each hash to the bytes to store under it, and the
    caller stores those it does not have yet (INSERT OR IGNORE). Deterministic: the same data
    always gives the same reference and blobs.
    """
    blobs: dict[bytes, bytes] = {}
    chunks: list[bytes] = []
    cutter = FastCDC(  # not safe to share between threads, and cheap to build
        _AVG_CHUNK,
        min_size=_MIN_CHUNK,
        max_size=_MAX_CHUNK,
        normalized_chunking=_NORMALIZATION,
    )
    for chunk in cutter.cut_buf(memoryview(data)[_PREFIX:]):
        raw = chunk.data
        key = _chunk_key(raw)
        if key not in blobs:
            blobs[key] = _stored_chunk(key, raw)
        chunks.append(key)
    hashes: list[bytes] = []
    height = 0
    if len(chunks) > 1:
        root, height = _build_tree(chunks[:-1], blobs)
        hashes.append(root)
    if chunks:
        hashes.append(chunks[-1])
    head = _HEAD.pack(_VERSION, len(hashes), height, len(data))
    return b"".join((head, *hashes, data[:_PREFIX])), blobs


def _build_tree(keys: list[bytes], blobs: dict[bytes, bytes]) -> tuple[bytes, int]:
    """Group ``keys`` into nodes, level by level, until one key is left: (root, its level)."""
    level = 0
    while len(keys) > 1:
        level += 1
        parents: list[bytes] = []
        start = 0
        for end, key in enumerate(keys, 1):
            size = end - start
            # At least two entries a node, so every level at least halves the one below.
            if size == _MAX_FANOUT or (size > 1 and int.from_bytes(key[:2], "little") < _BOUNDARY):
                parents.append(_put_node(level, keys[start:end], blobs))
                start = end
        if start < len(keys):
            parents.append(_put_node(level, keys[start:], blobs))
        keys = parents
    return keys[0], level


def _put_node(level: int, keys: list[bytes], blobs: dict[bytes, bytes]) -> bytes:
    blob = b"".join((bytes((_NODE, level)), *keys))
    key = _node_key(blob)
    blobs[key] = blob
    return key


class _Ref:
    """A parsed root reference."""

    def __init__(self, root_ref: bytes) -> None:
        if len(root_ref) < _HEAD.size:
            raise SerializationError(f"chunked payload reference is truncated ({len(root_ref)} B)")
        version, count, self.height, self.length = _HEAD.unpack_from(root_ref)
        if version != _VERSION:
            raise SerializationError(
                f"chunked payload reference has format version {version}, which this version of "
                f"undying does not know: it was written by a newer version (upgrade undying) or "
                f"it is corrupt"
            )
        end = _HEAD.size + count * _HASH_SIZE
        self.prefix = root_ref[end:]
        chunked = self.length > _PREFIX
        if count > 2 or (count > 0) != chunked or len(self.prefix) != min(self.length, _PREFIX):
            raise SerializationError("chunked payload reference is corrupt")
        hashes = [root_ref[i : i + _HASH_SIZE] for i in range(_HEAD.size, end, _HASH_SIZE)]
        self.tree = hashes[0] if count == 2 else None
        self.last = hashes[-1] if hashes else None


def _fetch(load: Loader, keys: Iterable[bytes], what: str) -> Mapping[bytes, bytes]:
    wanted = list(dict.fromkeys(keys))
    found = load(wanted)
    for key in wanted:
        if key not in found:
            raise SerializationError(
                f"chunked payload is incomplete: {what} {key.hex()} is missing from the store"
            )
    return found


def _chunk_keys(ref: _Ref, load: Loader, nodes: set[bytes] | None = None) -> list[bytes]:
    """The payload's chunk hashes in order, loading and checking the tree one level per call.

    Node hashes are added to ``nodes`` when given.
    """
    if ref.last is None:
        return []
    keys = [] if ref.tree is None else [ref.tree]
    for level in range(ref.height, 0, -1):
        found = _fetch(load, keys, "tree node")
        children: list[bytes] = []
        for key in keys:
            blob = found[key]
            count, extra = divmod(len(blob) - 2, _HASH_SIZE)
            if _node_key(blob) != key or blob[:2] != bytes((_NODE, level)) or extra or count < 1:
                raise SerializationError(
                    f"chunked payload is corrupt: tree node {key.hex()} does not match its hash"
                )
            children.extend(blob[i : i + _HASH_SIZE] for i in range(2, len(blob), _HASH_SIZE))
        if nodes is not None:
            nodes.update(keys)
        keys = children
    keys.append(ref.last)
    return keys


def _chunk_data(key: bytes, blob: bytes) -> bytes:
    kind = blob[0] if blob else None
    try:
        if kind == _ZSTD:
            raw = zstd_decompress(blob[1:], _MAX_CHUNK)
        elif kind == _RAW:
            raw = blob[1:]
        else:
            raise SerializationError(f"unknown chunk kind {kind}")
    except SerializationError as exc:
        raise SerializationError(f"chunked payload is corrupt: chunk {key.hex()}: {exc}") from None
    if _chunk_key(raw) != key:
        raise SerializationError(
            f"chunked payload is corrupt: chunk {key.hex()} does not match its hash"
        )
    return raw


def join(root_ref: bytes, load: Loader) -> bytes:
    """Rebuild the bytes :func:`split` cut, calling ``load`` once per tree level plus once for
    the chunks. Every blob is checked against its hash; a missing or damaged one raises
    :class:`SerializationError`."""
    ref = _Ref(root_ref)
    keys = _chunk_keys(ref, load)
    found = _fetch(load, keys, "chunk")
    raws: dict[bytes, bytes] = {}
    parts = [ref.prefix]
    for key in keys:
        raw = raws.get(key)
        if raw is None:
            raw = raws[key] = _chunk_data(key, found[key])
        parts.append(raw)
    data = b"".join(parts)
    if len(data) != ref.length:
        raise SerializationError(
            f"chunked payload is corrupt: rebuilt {len(data)} bytes, expected {ref.length}"
        )
    return data


def referenced(root_ref: bytes, load: Loader) -> set[bytes]:
    """Every blob hash ``root_ref`` needs (tree nodes and chunks), for garbage collection.

    Loads the tree nodes (one call per level) but not the chunks.
    """
    keys: set[bytes] = set()
    keys.update(_chunk_keys(_Ref(root_ref), load, keys))
    return keys
