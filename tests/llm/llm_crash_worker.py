"""A worker process that runs (or recovers) one agent of llm_agents.py and may SIGKILL itself.

    UNDYING_LLM_EFFECTS=... UNDYING_LLM_CRASH=... python llm_crash_worker.py DB URL AGENT

``URL`` is the scripted model server; ``AGENT`` is ``research`` or ``refund``. Prints
``result <json>`` when the run ends. ``UNDYING_LLM_PUBLISH=NAME`` makes the OpenAI client
publish its streamed tokens to the run's stream NAME.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import anthropic
import httpx2
import llm_agents
import openai

import undying.llm
from undying import App

DB, URL, AGENT = sys.argv[1], sys.argv[2], sys.argv[3]
INPUT = {"research": "durable agents", "refund": "My order A-17 arrived broken, refund it"}


async def main() -> None:
    hooks = {"request": [llm_agents.crash_before_request]}
    http = httpx2.AsyncClient(event_hooks=hooks)
    o = undying.llm.durable(openai.AsyncOpenAI(base_url=f"{URL}/v1", api_key="t"),
                            retry_delay=0.05,
                            publish_to=os.environ.get("UNDYING_LLM_PUBLISH") or None)
    a = undying.llm.durable(
        anthropic.AsyncAnthropic(base_url=URL, api_key="t", http_client=http), retry_delay=0.05
    )
    app = App(DB, strict=True, suspend_after=0.2, poll_interval=0.1)
    llm_agents.register(app, o, a)
    async with app:
        handle = await app.start(AGENT, INPUT[AGENT], run_id=f"{AGENT}-1")
        result = await handle.result(timeout=90)
    print("result " + json.dumps(result, sort_keys=True), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
