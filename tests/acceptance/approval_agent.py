"""An agent that waits for a human's approval; run as a script by test_approval_crash.py.

usage: approval_agent.py DB LOG start|recover|send
"""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta

import undying
from undying import App, Context

DB, LOG, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
app = App(DB, lease_ttl=30.0, suspend_after=60.0)  # stays in memory: the kill finds it there


@undying.step
async def act(tag: str) -> str:
    with open(LOG, "a") as log:
        log.write(tag + "\n")
    return tag


@app.workflow(name="approval-agent")
async def agent(ctx: Context) -> str:
    await act("draft")
    ctx.set_status("waiting for approval")
    print("WAITING", flush=True)
    answer = await ctx.wait_for_event("approval", timeout=timedelta(days=2))
    await act(f"publish:{answer}")
    return f"published with {answer}"


async def main() -> None:
    if MODE == "send":
        client = App(DB, worker=False)
        async with client:
            await client.send_event("ap-1", "approval", "yes")
        return
    async with app:
        handle = await app.start(agent, run_id="ap-1") if MODE == "start" else app.handle("ap-1")
        print("RESULT", await handle.result(), flush=True)


asyncio.run(main())
