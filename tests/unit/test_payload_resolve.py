"""Reading offloaded payloads back: small ones joined on the event loop, large ones in a
thread, and either way a missing blob is an error, never wrong bytes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from undying import payloads
from undying.chunking import split
from undying.errors import SerializationError
from undying.store.memory import MemoryStore, drop_database

SIZES = [10_000, 3 * payloads.INLINE_JOIN_BYTES]  # joined on the loop / in a thread


def _with_store(body: Callable[[MemoryStore], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        store = MemoryStore("memory://resolve")
        await store.open("reader")
        try:
            await body(store)
        finally:
            await store.close()

    try:
        asyncio.run(main())
    finally:
        drop_database("resolve")


@pytest.mark.parametrize("size", SIZES)
def test_an_offloaded_payload_reads_back_exactly(size: int) -> None:
    async def body(store: MemoryStore) -> None:
        data = os.urandom(size)  # incompressible: stored about as large as it is
        root, blobs = split(data)
        await store.put_blobs(blobs)
        assert await payloads.resolve(store, bytes([payloads.REF_MARK]) + root) == data

    _with_store(body)


@pytest.mark.parametrize("size", SIZES)
def test_a_missing_blob_is_an_error_on_either_path(size: int) -> None:
    async def body(store: MemoryStore) -> None:
        root, blobs = split(os.urandom(size))
        victim = sorted(blobs)[len(blobs) // 2]
        await store.put_blobs({k: v for k, v in blobs.items() if k != victim})
        with pytest.raises(SerializationError):
            await payloads.resolve(store, bytes([payloads.REF_MARK]) + root)

    _with_store(body)
