"""Where large journal payloads go: content-defined chunks, stored once by hash.

A journal entry's payload is normally a codec frame kept inline in its row. When the frame is
larger than ``OFFLOAD_THRESHOLD``, it is split (``undying.chunking``) into chunks and tree nodes
that are stored in the ``blobs`` table, deduplicated across steps and runs, and the row keeps
only a small reference: ``REF_MARK`` followed by the chunk tree's root reference. Codec frames
never start with ``REF_MARK``, so a reader can tell the two apart from the first byte.

The chunker is imported only when a payload is that large, so ``import undying`` and small
workloads never pay for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence, Set

from .store.base import Blobs, Entry, ReadSide

REF_MARK = 0x10
_REF_PREFIX = bytes([REF_MARK])
#: Payloads larger than this leave the journal row. The journal is a WITHOUT ROWID table
#: (one B-tree, the fastest append); in it a row over ~1 KB spills into a whole 4 KB overflow
#: page, so a 1.1 KB step result would take 4 KB. Measured on 1,000 such results: 4.5 MiB
#: inline, ~1.4 MiB offloaded as (compressed, deduplicated) chunks.
OFFLOAD_THRESHOLD = 900


def is_ref(payload: bytes | None) -> bool:
    return payload is not None and payload[:1] == _REF_PREFIX


async def offload(
    store: Blobs, entries: Sequence[Entry], committed: Set[bytes] = frozenset()
) -> set[bytes]:
    """Replace large payloads with chunk references, storing the chunks first; returns the
    hashes of the blobs the references need.

    Chunks are content-addressed and written before the entry that refers to them, so a crash
    in between leaves at worst an unreferenced blob for ``undying gc``, never a dangling ref.

    ``committed`` holds blobs that entries of this run's journal, already committed, refer to:
    those are neither written nor touched again. GC cannot take them while those entries
    stand, and a run's entries stand while it runs; a history that grows every turn would
    otherwise rewrite every earlier message's row each turn.
    """
    needed: set[bytes] = set()
    for entry in entries:
        payload = entry.payload
        if payload is not None and len(payload) > OFFLOAD_THRESHOLD and not is_ref(payload):
            from .chunking import split

            root, blobs = split(payload)
            needed.update(blobs)
            if committed:
                blobs = {key: blob for key, blob in blobs.items() if key not in committed}
            await store.put_blobs(blobs)
            entry.payload = _REF_PREFIX + root
    return needed


#: A recorder remembers at most this many committed blob hashes (then starts again).
COMMITTED_LIMIT = 1 << 16


def remember(committed: set[bytes], needed: set[bytes]) -> None:
    """Add the blobs of entries just committed to a recorder's ``committed`` set."""
    if len(committed) + len(needed) > COMMITTED_LIMIT:
        committed.clear()
    committed |= needed


#: A reference whose blobs add up to at most this many bytes is joined on the event loop;
#: a larger one in a thread, so decompressing it never stalls the loop.
INLINE_JOIN_BYTES = 1 << 20


class _NotLoaded(Exception):
    """Raised by the in-loop loader: ``join`` needs these blobs, which are not fetched yet."""

    def __init__(self, hashes: list[bytes]) -> None:
        super().__init__(f"{len(hashes)} blobs not loaded yet")
        self.hashes = hashes


async def resolve(store: ReadSide, payload: bytes) -> bytes:
    """The codec frame a stored payload stands for (joining chunks when it is a reference;
    only reads, so read-only tools such as the web UI use it too).

    ``join`` is synchronous and asks for blobs one tree level at a time. A payload of a few
    blobs (the usual step result) is joined here on the loop: each time ``join`` asks for
    blobs not fetched yet it stops, they are fetched, and it starts over (a tree has two or
    three levels). A thread per payload would cost more than the join itself (measured:
    ~0.35 ms of a replayed 10 KB step was the thread hop). Past ``INLINE_JOIN_BYTES`` the
    rest of the join moves to a thread."""
    if not is_ref(payload):
        return payload
    from .chunking import join

    root = bytes(payload[1:])
    fetched: dict[bytes, bytes] = {}
    asked: set[bytes] = set()
    size = 0

    def load_fetched(hashes: list[bytes]) -> Mapping[bytes, bytes]:
        missing = [h for h in hashes if h not in asked]
        if missing:
            raise _NotLoaded(missing)
        return {h: fetched[h] for h in hashes if h in fetched}  # absent ones stay absent

    while size <= INLINE_JOIN_BYTES:
        try:
            return join(root, load_fetched)
        except _NotLoaded as need:
            found = await store.get_blobs(need.hashes)
            asked.update(need.hashes)
            fetched.update(found)
            size += sum(len(blob) for blob in found.values())

    loop = asyncio.get_running_loop()

    def load(hashes: list[bytes]) -> Mapping[bytes, bytes]:
        # In the thread: what was fetched already is reused; the rest is asked of the loop.
        missing = [h for h in hashes if h not in asked]
        found = dict(fetched)
        if missing:
            found.update(asyncio.run_coroutine_threadsafe(store.get_blobs(missing), loop).result())
        return {h: found[h] for h in hashes if h in found}

    return await asyncio.to_thread(join, root, load)


async def referenced_blobs(store: ReadSide, payloads: Sequence[bytes]) -> set[bytes]:
    """Every blob hash the given references need (the mark phase of garbage collection)."""
    from .chunking import referenced

    loop = asyncio.get_running_loop()

    def load(hashes: list[bytes]) -> Mapping[bytes, bytes]:
        return asyncio.run_coroutine_threadsafe(store.get_blobs(hashes), loop).result()

    def mark() -> set[bytes]:
        seen: set[bytes] = set()
        for payload in payloads:
            if is_ref(payload):
                seen |= referenced(bytes(payload[1:]), load)
        return seen

    return await asyncio.to_thread(mark)
