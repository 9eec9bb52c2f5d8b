"""Reading offloaded payloads back: small ones joined on the event loop, large ones in a
thread, and either way a missing blob is an error, never wrong bytes."""

from __future__ import annotations

import asyncio
import os

import pytest

from undying import payloads
from undying.chunking import split
from undying.errors import SerializationError
from undying.store.memory import MemoryStore, drop_database


def _frame(size: int) -> bytes:
    # Incompressible, so the bytes stored are about the size of the payload.
    return os.urandom(size)


async def _stored(store: MemoryStore, data: bytes) -> bytes:
    root, blobs = split(data)
    await store.put_blobs(blobs)
    return bytes([payloads.REF_MARK]) + root


@pytest.mark.parametrize("size", [10_000, 3 * payloads.INLINE_JOIN_BYTES])
def test_an_offloaded_payload_reads_back_exactly(size: int) -> None:
    async def body() -> None:
        store = MemoryStore("memory://resolve-exact")
        await store.open("reader")
        try:
            data = _frame(size)
            ref = await _stored(store, data)
            assert await payloads.resolve(store, ref) == data
        finally:
            await store.close()

    try:
        asyncio.run(body())
    finally:
        drop_database("resolve-exact")


@pytest.mark.parametrize("size", [10_000, 3 * payloads.INLINE_JOIN_BYTES])
def test_a_missing_blob_is_an_error_on_either_path(size: int) -> None:
    async def body() -> None:
        store = MemoryStore("memory://resolve-missing")
        await store.open("reader")
        try:
            data = _frame(size)
            root, blobs = split(data)
            victim = sorted(blobs)[len(blobs) // 2]
            await store.put_blobs({k: v for k, v in blobs.items() if k != victim})
            with pytest.raises(SerializationError):
                await payloads.resolve(store, bytes([payloads.REF_MARK]) + root)
        finally:
            await store.close()

    try:
        asyncio.run(body())
    finally:
        drop_database("resolve-missing")
