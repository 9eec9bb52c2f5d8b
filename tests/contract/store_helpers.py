"""Shared pieces of the storage contract suite (records, claims, opened stores)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

from undying.store.base import (
    ARMED,
    INTENT,
    OK,
    Claim,
    Entry,
    NewRun,
    QueueLimits,
    Store,
)

T = TypeVar("T")
MakeStore = Callable[[], Store]  # the conftest's make_store fixture
NOW = time.time()
LEASE = NOW + 60


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


@asynccontextmanager
async def opened(make_store: MakeStore, *worker_ids: str) -> AsyncIterator[list[Store]]:
    """Open one store per worker id (think: one process each), close them all at the end."""
    async with AsyncExitStack() as stack:
        stores: list[Store] = []
        for worker_id in worker_ids:
            store = make_store()
            await store.open(worker_id)
            stack.push_async_callback(store.close)
            stores.append(store)
        yield stores


def new_run(run_id: str, **fields: Any) -> NewRun:
    return NewRun(run_id=run_id, workflow=fields.pop("workflow", "wf"), input=b"in", **fields)


def entry(seq: int, status: str = OK, payload: bytes | None = b"result", **fields: Any) -> Entry:
    finished = None if status in (INTENT, ARMED) else NOW
    return Entry(
        seq=seq,
        kind=fields.pop("kind", "step"),
        name=fields.pop("name", f"step{seq}"),
        status=status,
        payload=payload,
        digest=fields.pop("digest", b"\x01\x02"),
        attempt=fields.pop("attempt", 1),
        started_at=NOW,
        finished_at=finished,
        **fields,
    )


async def claim(
    store: Store,
    owner: str,
    *,
    now: float = NOW,
    limit: int = 10,
    queues: dict[str, QueueLimits] | None = None,
    per_queue: dict[str, int] | None = None,
) -> list[Claim]:
    return await store.claim(
        owner,
        now=now,
        lease_expires=now + 60,
        limit=limit,
        queues=queues or {},
        running_per_queue=per_queue or {},
    )


async def started(store: Store, run_id: str, owner: str = "w1", **fields: Any) -> int:
    """Create a run already claimed by ``owner``; return its epoch."""
    created, record = await store.create_run(
        new_run(run_id, **fields), owner=owner, lease_expires=LEASE, now=NOW
    )
    assert created
    return record.epoch


async def journal(store: Store, run_id: str) -> list[tuple[int, str, bytes | None]]:
    entries = await store.load_journal_meta(run_id)
    payloads = await store.load_payloads(run_id, [e.seq for e in entries if e.deferred])
    return [(e.seq, e.status, payloads.get(e.seq, e.payload)) for e in entries]
