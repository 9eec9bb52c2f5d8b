"""The two agents the crash tests kill: a research agent (OpenAI: parallel searches, a fetch,
a streamed summary) and a refund agent (Anthropic: lookup, human approval, refund at most
once), with their model scripts. Tool bodies append to an effects database (a file the
journal knows nothing about), so a second execution is visible; refunds go to a ledger keyed
by idempotency key, as a payment API would keep them.

Crash points (``$UNDYING_LLM_CRASH``, each fires once, by SIGKILL): ``stream`` (3 text deltas
into the summary), ``fetch`` (entering the fetch tool, after the searches were journaled),
``after-refund`` (as the model call after the refund goes out: the refund is journaled),
``in-refund`` (inside the refund, after the ledger changed, before its journal write).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import undying
import undying.llm
from undying import Context
from undying.llm.testing import RecordedRequest, Turn, call_tools, reply

SUMMARY = "Durable agents journal every call so a crash costs nothing but a replay"
ANSWER = "Refunded 12.99 for order A-17."


def research_script(request: RecordedRequest) -> Turn:
    if "Summarize" in json.dumps(request.body.get("messages", [])[:1]):
        return reply(SUMMARY)
    turns = [
        call_tools(("search", {"query": "durable agents"}), ("search", {"query": "replay"})),
        call_tools(("fetch", {"url": "https://example.org/durable"})),
        reply("notes: journal, replay, fetch"),
    ]
    return turns[min(request.turn_index, 2)]


REFUND_SCRIPT = [
    call_tools(("lookup_order", {"order_id": "A-17"})),
    call_tools(("refund", {"order_id": "A-17", "cents": 1299})),
    reply(ANSWER),
]


# -- effects ----------------------------------------------------------------------------------
def _effects() -> sqlite3.Connection:
    conn = sqlite3.connect(os.environ["UNDYING_LLM_EFFECTS"], isolation_level=None, timeout=30)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS effects (id INTEGER PRIMARY KEY, tool TEXT, pid INTEGER)"
    )
    conn.execute("CREATE TABLE IF NOT EXISTS refunds (key TEXT PRIMARY KEY, cents INTEGER)")
    return conn


def record(tool: str) -> None:
    with _effects() as conn:
        conn.execute("INSERT INTO effects (tool, pid) VALUES (?, ?)", (tool, os.getpid()))
    conn.close()


def crash_point(name: str) -> None:
    if name not in os.environ.get("UNDYING_LLM_CRASH", "").split(","):
        return
    marker = Path(os.environ["UNDYING_LLM_EFFECTS"] + f".{name}.crashed")
    if marker.exists():
        return
    marker.write_text(str(os.getpid()))
    print(f"crashing at {name}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


# -- tools ---------------------------------------------------------------------------------------
@undying.llm.tool
async def search(query: str) -> list[str]:
    """Search the web."""
    record("search")
    return [f"https://example.org/{query.replace(' ', '-')}"]


@undying.llm.tool(retries=2, retry_delay=0.05)
async def fetch(url: str) -> str:
    """Fetch a page."""
    crash_point("fetch")
    record("fetch")
    return f"page {url}: agents that journal every call survive crashes"


@undying.llm.tool
async def lookup_order(order_id: str) -> dict[str, Any]:
    """Look an order up."""
    record("lookup")
    return {"order_id": order_id, "cents": 1299, "status": "delivered damaged"}


def _refund_done(key: str) -> int | None:
    with _effects() as conn:
        row = conn.execute("SELECT cents FROM refunds WHERE key = ?", (key,)).fetchone()
    conn.close()
    return None if row is None else int(row[0])


async def reconcile_refund(key: str, order_id: str, cents: int) -> str:
    done = _refund_done(key)
    if done is not None:
        return f"refunded {done} (confirmed after a restart)"
    return await _do_refund(key, cents)


async def _do_refund(key: str, cents: int) -> str:
    with _effects() as conn:
        conn.execute("INSERT OR IGNORE INTO refunds (key, cents) VALUES (?, ?)", (key, cents))
        conn.execute("INSERT INTO effects (tool, pid) VALUES ('refund', ?)", (os.getpid(),))
    conn.close()
    crash_point("in-refund")
    return f"refunded {cents}"


@undying.llm.tool(at_most_once=True, requires_approval=True, reconcile=reconcile_refund)
async def refund(order_id: str, cents: int) -> str:
    """Refund an order (a human approves each refund)."""
    return await _do_refund(undying.idempotency_key(), cents)


# -- agents --------------------------------------------------------------------------------------
def register(app: undying.App, openai_client: Any, anthropic_client: Any) -> None:
    @app.workflow(name="research")
    async def research(ctx: Context, topic: str) -> dict[str, Any]:
        found = await undying.llm.run_tools(
            openai_client,
            tools=[search, fetch],
            messages=[{"role": "user", "content": f"Research {topic}"}],
            model="gpt-scripted",
        )
        summary: list[str] = []
        async with openai_client.chat.completions.stream(
            model="gpt-scripted",
            messages=[
                {"role": "system", "content": "Summarize the notes."},
                {"role": "user", "content": found.text},
            ],
        ) as stream:
            async for text in stream.text_stream:
                summary.append(text)
                if len(summary) == 3:
                    crash_point("stream")
            final = await stream.get_final_completion()
        return {"notes": found.text, "summary": final.choices[0].message.content,
                "streamed": "".join(summary)}

    @app.workflow(name="refund")
    async def refund_agent(ctx: Context, complaint: str) -> str:
        done = await undying.llm.run_tools(
            anthropic_client,
            tools=[lookup_order, refund],
            messages=[{"role": "user", "content": complaint}],
            model="claude-scripted",
            max_tokens=500,
        )
        return done.text


async def crash_before_request(request: Any) -> None:
    """httpx request hook: the model call after the refund is about to go out."""
    body = json.loads(request.content or b"{}")
    turns = sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")
    if request.url.path.endswith("/messages") and turns == 2:
        crash_point("after-refund")
