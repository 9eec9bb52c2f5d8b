"""A research agent on the OpenAI client, durable with one line.

    python examples/llm_research_agent.py [RUN_ID]

The model searches (two searches in parallel), fetches a page, then writes a summary that is
streamed to the terminal as it is generated. Every model call and every tool call is a
journaled step (./llm-research.db): kill the process half-way (Ctrl-C) and run it again with
the same RUN_ID, and it continues where it stopped without paying for the calls it already
made; run a finished RUN_ID again and the answer comes from the journal, no request at all.

Offline by default: the model is undying.llm.testing's scripted server on loopback, speaking
the OpenAI wire format. With $OPENAI_API_KEY set it uses the real API ($OPENAI_MODEL, default
gpt-4o-mini); the search and fetch tools are small local stand-ins either way.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import openai

import undying
import undying.llm
from undying import App, Context
from undying.llm.testing import RecordedRequest, ScriptedServer, Turn, call_tools, reply

PAGES = {
    "https://example.org/journal": "Durable agents journal each call before moving on.",
    "https://example.org/replay": "After a crash the code is replayed; recorded calls return.",
}

app = App(os.environ.get("UNDYING_DATABASE_URL", "llm-research.db"))


@undying.llm.tool
async def search(query: str) -> list[str]:
    """Search the web; returns URLs."""
    return [url for url in PAGES if any(w in url for w in query.lower().split())] or list(PAGES)


@undying.llm.tool(retries=3)
async def fetch(url: str) -> str:
    """Fetch a web page's text."""
    return PAGES.get(url, "404 not found")


def script(request: RecordedRequest) -> Turn:
    """The offline model: two parallel searches, a fetch, notes; then a summary."""
    if "Summarize" in json.dumps(request.body.get("messages", [])[:1]):
        return reply("Durable agents journal every call, so a crash costs a replay, not a rerun.")
    turns = [
        call_tools(("search", {"query": "journal"}), ("search", {"query": "replay"})),
        call_tools(("fetch", {"url": "https://example.org/journal"})),
        reply("Notes: calls are journaled; replay returns recorded results."),
    ]
    return turns[min(request.turn_index, len(turns) - 1)]


def build(client: Any, model: str) -> Any:
    @app.workflow(name="llm-research")
    async def research(ctx: Context, question: str) -> dict[str, Any]:
        found = await undying.llm.run_tools(
            client,
            tools=[search, fetch],
            messages=[{"role": "user", "content": question}],
            model=model,
            max_turns=6,
        )
        async with client.chat.completions.stream(
            model=model,
            messages=[
                {"role": "system", "content": "Summarize the notes in one sentence."},
                {"role": "user", "content": found.text},
            ],
        ) as stream:
            async for text in stream.text_stream:  # live on the first run, silent on replay
                print(text, end="", flush=True)
            summary = await stream.get_final_completion()
        print()
        return {"turns": found.turns, "summary": summary.choices[0].message.content}

    return research


async def main(run_id: str) -> None:
    server = None
    if os.environ.get("OPENAI_API_KEY"):
        raw = openai.AsyncOpenAI()
        model = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
    else:
        server = await ScriptedServer(script).start()
        raw = openai.AsyncOpenAI(base_url=server.openai_url, api_key="offline")
        model = "scripted"
    research = build(undying.llm.durable(raw), model)
    try:
        async with app:
            handle = await app.start(research, "How do durable agents survive crashes?",
                                     run_id=run_id)
            result = await handle.result()
            usage = await handle.token_usage()
    finally:
        await raw.close()
        if server is not None:
            await server.stop()
    print(f"run {run_id!r}: {result['turns']} tool turns; summary: {result['summary']}")
    print(f"tokens spent {usage.spent.total} in {usage.spent.calls} call(s); "
          f"saved by replay {usage.saved.total} in {usage.saved.calls} call(s)")
    if server is not None:
        print(f"requests sent to the model: {sum(server.requests.values())}")


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "research-1"))
    except KeyboardInterrupt:
        sys.exit("\ninterrupted: run it again with the same RUN_ID to continue")
