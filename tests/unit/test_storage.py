"""Context without bloat: chunked, deduplicated payloads, keyed state, garbage collection."""

from __future__ import annotations

import asyncio
import os
import sqlite3

import undying
from undying import Context
from undying.retention import collect_garbage
from undying.testing import temp_app, wait_for_status


def _message(turn: int) -> dict[str, object]:
    # ~1 KB of text that differs per turn (compressible like real prose, not random bytes).
    words = " ".join(f"word{(turn * 7 + i) % 997}" for i in range(120))
    return {"role": "assistant" if turn % 2 else "user", "turn": turn, "content": words}


def _db_bytes(path: str) -> int:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("VACUUM")
    return os.path.getsize(path)


def test_growing_history_is_stored_once_and_replays(db_path: str) -> None:
    app = temp_app(db_path)
    turns = 150

    @undying.step
    async def think(history: list[dict[str, object]], turn: int) -> list[dict[str, object]]:
        return [*history, _message(turn)]

    @app.workflow()
    async def agent(ctx: Context) -> int:
        history: list[dict[str, object]] = []
        for turn in range(turns):
            history = await think(history, turn)
        return len(history)

    async def main() -> tuple[object, object, int]:
        async with app:
            first = await (await app.start(agent, run_id="grow")).result()
            # Later turns do not re-put the blobs earlier turns committed: GC must still mark
            # every one of them (format-2 references), and the fork must find them all.
            report = await collect_garbage(app.store, grace=-1)
            forked = await app.fork("grow", from_step=turns)  # replays every step's payload
            return first, await forked.result(), report.blobs_deleted

    assert asyncio.run(main()) == (turns, turns, 0)
    with sqlite3.connect(db_path) as db:
        refs = [row[0] for row in db.execute("SELECT payload FROM journal WHERE kind = 'step'")]
    assert sum(1 for payload in refs if payload[:2] == b"\x10\x02") > turns * 0.9  # format 2
    size = _db_bytes(db_path)
    whole = sum(len(repr([_message(t) for t in range(n + 1)])) for n in range(turns))
    # Stored whole, the results would take `whole` bytes (~11 MB); chunked, a small fraction.
    assert size < whole / 10, (size, whole)


def test_keyed_state_is_loaded_per_key_and_replays(db_path: str) -> None:
    app = temp_app(db_path, suspend_after=0.0)
    seen: list[object] = []

    @app.workflow(name="memory")
    async def memory(ctx: Context) -> object:
        ctx.state.set("notes", ["a"])
        ctx.state.set("count", 1)
        await ctx.wait_for_event("go")
        notes = await ctx.state.get("notes")
        seen.append(notes)
        ctx.state.set("notes", [*notes, "b"])
        ctx.state.delete("count")
        return [await ctx.state.get("notes"), await ctx.state.get("count", "gone")]

    async def main() -> object:
        async with app:
            handle = await app.start("memory", run_id="mem")
            await wait_for_status(handle, "waiting")
            await app.send_event("mem", "go")
            return await handle.result(timeout=10)

    assert asyncio.run(main()) == [["a", "b"], "gone"]
    assert seen == [["a"]]


def test_gc_deletes_only_unreferenced_chunks(db_path: str) -> None:
    app = temp_app(db_path)

    @undying.step
    async def big(seed: int) -> str:
        return "".join(f"{seed}-{i} " for i in range(20_000))

    @app.workflow()
    async def wf(ctx: Context, seed: int) -> int:
        return len(await big(seed))

    async def main() -> tuple[int, int, int]:
        async with app:
            await (await app.start(wf, 1, run_id="keep")).result()
            await (await app.start(wf, 2, run_id="drop")).result()
            store = app.store
            before = len(await store.blob_hashes(1e18))
            # delete one run's rows by hand, then collect
            db = store.db  # type: ignore[attr-defined]
            for table in ("journal", "runs"):
                db.execute(f"DELETE FROM {table} WHERE run_id = 'drop'")
            report = await collect_garbage(store, grace=-1)
            after = len(await store.blob_hashes(1e18))
            forked = await app.fork("keep", from_step=1)
            assert await forked.result() == len(await big(1))
            return before, after, report.blobs_deleted

    before, after, deleted = asyncio.run(main())
    assert deleted > 0 and after == before - deleted and after > 0
