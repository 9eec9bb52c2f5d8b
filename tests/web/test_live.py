"""Live streams: one watcher of the store wakes every open stream, and stopping ends them."""

from __future__ import annotations

import asyncio
import uuid

from undying.store.base import NewRun
from undying.store.memory import MemoryStore, drop_database
from undying.web.live import ChangeFeed, stream_updates


def test_a_change_made_elsewhere_reaches_every_stream_and_closing_ends_them() -> None:
    name = f"live-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        ui_store, writer = MemoryStore(f"memory://{name}"), MemoryStore(f"memory://{name}")
        await ui_store.open("ui")
        await writer.open("worker")
        feed = ChangeFeed(ui_store)
        feed.start()
        runs: list[int] = []

        async def render() -> tuple[str, bool]:
            found = await ui_store.list_workflows()
            runs.append(len(found))
            return f"<p>{len(found)} workflows</p>", False

        streams = [stream_updates(feed, render) for _ in range(3)]
        assert [await anext(s) for s in streams] == ["retry: 2000\n\n"] * 3
        first = [await anext(s) for s in streams]
        assert first == ["event: update\ndata: <p>0 workflows</p>\n\n"] * 3
        waiting = [asyncio.ensure_future(anext(s)) for s in streams]
        await writer.create_run(NewRun("r1", "wf", b""), owner=None, lease_expires=0, now=1)
        updates = await asyncio.wait_for(asyncio.gather(*waiting), 3)  # no 5 s refresh needed
        assert updates == ["event: update\ndata: <p>1 workflows</p>\n\n"] * 3
        waiting = [asyncio.ensure_future(anext(s, "ended")) for s in streams]
        await asyncio.get_running_loop().run_in_executor(None, feed.close_threadsafe)
        assert await asyncio.wait_for(asyncio.gather(*waiting), 3) == ["ended"] * 3
        await feed.stop()
        await writer.close()
        await ui_store.close()

    try:
        asyncio.run(main())
    finally:
        drop_database(name)
