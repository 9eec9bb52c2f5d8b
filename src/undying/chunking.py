"""Chunked payloads, so that a payload that keeps growing is stored once, not every turn.

An agent step often returns its whole message history, one message longer each turn. Stored
whole, 1,000 turns of 1 KB messages cost ~500 MB. Two formats cut a payload into blobs:

**Format 2** (codec frames whose value is a container; a compressed frame, at most 16 KiB, is
split as its uncompressed equivalent, which reads back to the same value): cut at the parts of
the value (:mod:`undying.value_parts`): each message of a history is one blob, stored once,
whatever its entropy; the bytes that change every turn (headers that count the items, the
frame's CRC) stay inline in the reference as *gaps*. The parts' hashes are grouped into level-1
nodes by content; the hashes after the last group boundary (a handful: the group still filling
up) stay inline too, so a growing history writes a node only when a group closes, and the closed
nodes form a tree above (fanout :data:`_PARTS_FANOUT`). The last few splits are remembered: a
frame that extends one of them (the next turn's history) is compared once with it and only its
new parts are hashed and compressed, so the cost of a turn is its new message, not the history.

**Format 1** (everything else, and every reference written before format 2):

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
never be read back as a chunk (a format-2 part is stored as a chunk). :func:`join` checks every
blob against its key, so a missing or damaged blob raises
:class:`~undying.errors.SerializationError` instead of returning wrong bytes.

Layouts (a new layout needs a new version byte; every version stays readable)::

    ref v1 = 1:u8 | hashes:u8 | height:u8 | length:u64le | tree root? | last chunk? | prefix
    ref v2 = 2:u8 | height:u8 | open:u8 | length:u64le | gaps:u16le | tree root? (if height)
             | open x 16-byte part hashes | gaps x (parts before it:u32le | size:u8 | bytes)
    chunk  = 0x00 | raw bytes        or        0x01 | zstd frame
    node   = 0x02 | level:u8 | 16-byte hashes of level-1 nodes, or of chunks when level is 1

In v1, ``hashes`` is 0 (everything fits in the prefix), 1 (one chunk) or 2 (a tree of all
chunks but the last, then the last); ``height`` is the tree root's level, 0 when the tree is a
single chunk. In v2 the payload is the gaps and the parts in order: the tree's leaves, then the
``open`` inline hashes, each gap placed after the number of parts it names.
"""

from __future__ import annotations

import bisect
import hashlib
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from pyfastcdc import FastCDC

from undying import value_parts
from undying.codec import CHUNK_THRESHOLD, uncompressed, zstd_compress, zstd_decompress
from undying.errors import SerializationError
from undying.value_parts import Cut

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

_RAW: Final = 0x00
_ZSTD: Final = 0x01
_NODE: Final = 0x02

_HEAD: Final = struct.Struct("<BBBQ")
_HEAD2: Final = struct.Struct("<BBBQH")
_GAP_HEAD: Final = struct.Struct("<IB")  # gaps are shorter than 64 bytes
_PARTS_VERSION: Final = 2
# Format 2's nodes are smaller: the right edge of its tree is rewritten as parts close a node,
# and a part (one message) is much smaller than a 4 KiB chunk.
_PARTS_FANOUT: Final = 8
# A frame this small holds one message or so: format 1 stores it as one chunk just as well, and
# faster (so a step that returns one new message each turn costs what it did).
_PARTS_MIN: Final = 2048
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
    """Cut ``data`` into blobs: at the parts of its value (format 2) when it is a codec frame
    holding a container, by content (format 1) otherwise.

    Returns ``(root_ref, blobs)``: ``root_ref`` (~170 bytes in format 1; in format 2 ~30 bytes
    plus 16 per hash not yet in a tree node, at most 31, plus the inline gaps) is what the
    caller keeps in place of the payload; ``blobs`` maps each hash to the bytes to store under
    it, and the caller stores those it does not have yet (INSERT OR IGNORE). Deterministic: the
    same data always gives the same reference and blobs.
    """
    plain = uncompressed(data)  # a compressed frame holds over 2 KiB of value
    if plain is not None or len(data) > _PARTS_MIN:
        parts = _split_parts(plain or data)
        if parts is not None:
            return parts
    return _split_content(data)


def _split_content(data: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """Format 1: FastCDC chunks (any bytes; small frames and values that are no container)."""
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


def _content_cuts(view: memoryview) -> list[int]:
    """The chunk lengths FastCDC cuts ``view`` into (a long string inside a format-2 value)."""
    cutter = FastCDC(
        _AVG_CHUNK, min_size=_MIN_CHUNK, max_size=_MAX_CHUNK, normalized_chunking=_NORMALIZATION
    )
    return [chunk.length for chunk in cutter.cut_buf(view)]


class _Split:
    """A format-2 split, kept so that the next turn's longer frame reuses its work."""

    __slots__ = ("cut", "data", "gaps", "group_ends", "keys", "node_blobs", "nodes", "parts")

    def __init__(self, data: bytes, cut: Cut) -> None:
        self.data = data
        self.cut = cut
        self.keys: list[bytes] = []  # the parts' hashes, in order
        self.parts: dict[bytes, bytes] = {}  # hash -> stored blob of every part
        self.gaps: list[tuple[int, int]] = []  # (segment index, parts before it) of each gap
        self.group_ends: list[int] = []  # number of keys the level-1 nodes cover, cumulated
        self.nodes: list[bytes] = []  # the level-1 nodes' hashes
        self.node_blobs: dict[bytes, bytes] = {}


# The last few format-2 splits: a step that returns its whole history meets its own previous
# frame here, and re-splitting it costs one compare plus the new message, not the history.
_SPLITS: Final = 4
_SPLITS_BYTES: Final = 32 * 1024 * 1024  # of frames remembered, all together
_splits: list[_Split] = []
_splits_lock = threading.Lock()


def _previous(data: bytes) -> _Split | None:
    """A remembered split that ``data`` may extend (value_parts checks the whole shared
    prefix): the most recent one with the same header and first bytes of children."""
    with _splits_lock:
        candidates = list(reversed(_splits))
    for old in candidates:
        first, mark = old.cut.first, old.cut.mark
        same = data[:1] == old.data[:1] and data[first : first + 64] == old.data[first : first + 64]
        if mark and len(data) > mark and same:
            return old
    return None


def _split_parts(data: bytes) -> tuple[bytes, dict[bytes, bytes]] | None:
    """Format 2: one blob per part of the value (``undying.value_parts``), or None when the
    frame is not a plain container.

    The parts' hashes are grouped into level-1 nodes by content; the hashes after the last
    group boundary stay inline in the reference (a growing history adds one there each turn,
    and writes a node only when a group closes), and the closed nodes form the tree above.
    """
    old = _previous(data)
    cut = value_parts.cut(data, _content_cuts, None if old is None else (old.data, old.cut))
    if cut is None:
        return None
    split = _Split(data, cut)
    keys, parts, gaps = split.keys, split.parts, split.gaps
    segments = cut.segments
    begin = reused = 0
    if old is not None and cut.reused:
        # The first segments are the old ones, bar the header (segment 0, a gap in both).
        begin = cut.reused
        gaps.extend(gap for gap in old.gaps if gap[0] < begin)
        reused = begin - len(gaps)  # parts among the shared segments
        keys.extend(old.keys[:reused])
        parts.update(old.parts if reused == len(old.keys) else {k: old.parts[k] for k in keys})
    view = memoryview(data)
    for index in range(begin, len(segments)):
        start, end, is_part = segments[index]
        if is_part:
            raw = view[start:end]
            key = _chunk_key(raw)
            if key not in parts:
                parts[key] = _stored_chunk(key, raw)
            keys.append(key)
        else:
            gaps.append((index, len(keys)))
    blobs = dict(parts)
    _group_parts(split, old, reused, blobs)
    rest = split.group_ends[-1] if split.group_ends else 0
    tree: tuple[bytes, ...] = ()
    height = 0
    if split.nodes:
        root, height = _build_tree(split.nodes, blobs, level=1, fanout=_PARTS_FANOUT)
        tree = (root,)
    with _splits_lock:
        _splits.append(split)
        del _splits[:-_SPLITS]
        while sum(len(kept.data) for kept in _splits) > _SPLITS_BYTES:
            del _splits[0]
    inline = []
    for index, before in gaps:
        start, end, _ = segments[index]
        inline.append(_GAP_HEAD.pack(before, end - start) + data[start:end])
    head = _HEAD2.pack(_PARTS_VERSION, height, len(keys) - rest, len(data), len(gaps))
    return b"".join((head, *tree, *keys[rest:], *inline)), blobs


def _group_parts(
    split: _Split, old: _Split | None, reused: int, blobs: dict[bytes, bytes]
) -> None:
    """Group ``split.keys`` into level-1 nodes, reusing the old split's nodes over its first
    ``reused`` keys, which the two share (groups are cut from the start of the keys, so a
    shared prefix groups the same)."""
    keys = split.keys
    start = 0
    if old is not None and reused:
        shared = bisect.bisect_right(old.group_ends, reused)
        if shared:
            split.group_ends = old.group_ends[:shared]
            split.nodes = old.nodes[:shared]
            start = split.group_ends[-1]
            for node in split.nodes:
                split.node_blobs[node] = blobs[node] = old.node_blobs[node]
    groups, _ = _groups(keys[start:], _PARTS_FANOUT)
    for group in groups:
        start += len(group)
        split.group_ends.append(start)
        node = _put_node(1, group, blobs)
        split.nodes.append(node)
        split.node_blobs[node] = blobs[node]


def _build_tree(
    keys: list[bytes], blobs: dict[bytes, bytes], level: int = 0, fanout: int = _FANOUT
) -> tuple[bytes, int]:
    """Group ``keys`` (of level ``level``) into nodes, level by level, until one key is left:
    (root, its level)."""
    while len(keys) > 1:
        level += 1
        groups, rest = _groups(keys, fanout)
        if rest < len(keys):
            groups.append(keys[rest:])
        keys = [_put_node(level, group, blobs) for group in groups]
    return keys[0], level


def _groups(keys: list[bytes], fanout: int) -> tuple[list[list[bytes]], int]:
    """Cut ``keys`` into node-sized groups by content; the keys from the returned index on
    have not reached a boundary yet (appending keys can still extend their group)."""
    groups: list[list[bytes]] = []
    boundary = 65536 // fanout
    most = 4 * fanout
    start = 0
    for end, key in enumerate(keys, 1):
        size = end - start
        # At least two entries a node, so every level at least halves the one below.
        if size == most or (size > 1 and int.from_bytes(key[:2], "little") < boundary):
            groups.append(keys[start:end])
            start = end
    return groups, start


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
    keys = [] if ref.tree is None else _tree_leaves(ref.tree, ref.height, load, nodes)
    keys.append(ref.last)
    return keys


def _tree_leaves(root: bytes, height: int, load: Loader, nodes: set[bytes] | None) -> list[bytes]:
    """The leaf hashes under ``root`` (a node of level ``height``, or a leaf when 0), in order."""
    keys = [root]
    for level in range(height, 0, -1):
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
    if root_ref[:1] == bytes((_PARTS_VERSION,)):
        return _join_parts(_PartsRef(root_ref), load)
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
    if root_ref[:1] == bytes((_PARTS_VERSION,)):
        keys.update(_PartsRef(root_ref).keys(load, keys))
    else:
        keys.update(_chunk_keys(_Ref(root_ref), load, keys))
    return keys


class _PartsRef:
    """A parsed format-2 reference."""

    def __init__(self, root_ref: bytes) -> None:
        if len(root_ref) < _HEAD2.size:
            raise SerializationError(f"chunked payload reference is truncated ({len(root_ref)} B)")
        _, self.height, count, self.length, gap_count = _HEAD2.unpack_from(root_ref)
        pos = _HEAD2.size
        self.tree: bytes | None = None
        if self.height:
            self.tree = root_ref[pos : pos + _HASH_SIZE]
            pos += _HASH_SIZE
        end = pos + count * _HASH_SIZE
        self.open = [root_ref[i : i + _HASH_SIZE] for i in range(pos, end, _HASH_SIZE)]
        pos = end
        #: (number of parts before it, inline bytes), in order
        self.gaps: list[tuple[int, bytes]] = []
        for _ in range(gap_count):
            if pos + _GAP_HEAD.size > len(root_ref):
                raise SerializationError("chunked payload reference is corrupt")
            index, size = _GAP_HEAD.unpack_from(root_ref, pos)
            pos += _GAP_HEAD.size
            self.gaps.append((index, root_ref[pos : pos + size]))
            pos += size
        if pos != len(root_ref) or (self.tree is not None and len(self.tree) != _HASH_SIZE):
            raise SerializationError("chunked payload reference is corrupt")

    def keys(self, load: Loader, nodes: set[bytes] | None = None) -> list[bytes]:
        """The parts' hashes in order, loading the tree (one call per level)."""
        keys = [] if self.tree is None else _tree_leaves(self.tree, self.height, load, nodes)
        keys.extend(self.open)
        return keys


def _join_parts(ref: _PartsRef, load: Loader) -> bytes:
    keys = ref.keys(load)
    found = _fetch(load, keys, "chunk")
    raws: dict[bytes, bytes] = {}
    pieces: list[bytes] = []
    gaps = iter(ref.gaps)
    gap = next(gaps, None)
    for index, key in enumerate(keys):
        while gap is not None and gap[0] == index:
            pieces.append(gap[1])
            gap = next(gaps, None)
        raw = raws.get(key)
        if raw is None:
            raw = raws[key] = _chunk_data(key, found[key])
        pieces.append(raw)
    while gap is not None and gap[0] == len(keys):
        pieces.append(gap[1])
        gap = next(gaps, None)
    data = b"".join(pieces)
    if gap is not None or len(data) != ref.length:
        raise SerializationError(
            f"chunked payload is corrupt: rebuilt {len(data)} bytes, expected {ref.length}"
        )
    return data
