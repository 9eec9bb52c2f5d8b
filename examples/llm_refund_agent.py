"""A refund agent on the Anthropic client: look the order up, ask a human, refund once.

    python examples/llm_refund_agent.py [RUN_ID] [--deny]

The refund tool requires approval: the run publishes the pending call in its status and
waits durably (the process may stop meanwhile; any worker resumes it when the answer comes,
``undying send RUN approval:<call id> '{"approved": true}'`` from a shell works too). This
script plays the human: it approves (or with --deny refuses) the call it sees. The refund is
at most once and keyed by ``undying.idempotency_key()`` in a ledger (./refunds.db), so a
crash around it can never pay twice; if a crash hides whether it happened, ``reconcile``
asks the ledger.

Offline by default (a scripted model on loopback speaking the Anthropic wire format); with
$ANTHROPIC_API_KEY set it uses the real API ($ANTHROPIC_MODEL, default claude-haiku-4-5).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from typing import Any

import anthropic

import undying
import undying.llm
from undying import App, Context
from undying.llm.testing import RecordedRequest, ScriptedServer, Turn, call_tools, reply

app = App(os.environ.get("UNDYING_DATABASE_URL", "llm-refund.db"))
LEDGER = "refunds.db"
TURNS = [
    call_tools(("lookup_order", {"order_id": "A-17"})),
    call_tools(("refund", {"order_id": "A-17", "cents": 1299})),
    reply("I have refunded 12.99 for order A-17. Sorry about the damage!"),
]


def script(request: RecordedRequest) -> Turn:
    """The offline model: lookup, refund, then an answer that fits what the human said."""
    if "a human refused" in json.dumps(request.body.get("messages", [])[-1:]):
        return reply("A colleague has to look at this refund first; we will get back to you.")
    return TURNS[min(request.turn_index, len(TURNS) - 1)]


def _ledger() -> sqlite3.Connection:
    db = sqlite3.connect(LEDGER, isolation_level=None)
    db.execute("CREATE TABLE IF NOT EXISTS refunds (key TEXT PRIMARY KEY, cents INTEGER)")
    return db


@undying.llm.tool
async def lookup_order(order_id: str) -> dict[str, Any]:
    """Look an order up by id."""
    return {"order_id": order_id, "cents": 1299, "status": "delivered, damaged"}


async def reconcile(key: str, order_id: str, cents: int) -> str:
    row = _ledger().execute("SELECT cents FROM refunds WHERE key = ?", (key,)).fetchone()
    return f"refunded {row[0]}" if row else "not refunded: ask the customer to retry"


@undying.llm.tool(at_most_once=True, requires_approval=True, reconcile=reconcile)
async def refund(order_id: str, cents: int) -> str:
    """Refund an order, in cents. A human approves every refund."""
    _ledger().execute(
        "INSERT OR IGNORE INTO refunds VALUES (?, ?)", (undying.idempotency_key(), cents)
    )
    return f"refunded {cents}"


def build(client: Any, model: str) -> Any:
    @app.workflow(name="llm-refund")
    async def refund_agent(ctx: Context, complaint: str) -> str:
        done = await undying.llm.run_tools(
            client,
            tools=[lookup_order, refund],
            messages=[{"role": "user", "content": complaint}],
            model=model,
            max_tokens=1024,
            system="You handle refunds. Look the order up before refunding it.",
        )
        return done.text

    return refund_agent


async def play_the_human(run_id: str, deny: bool) -> None:
    while True:
        status = await app.get_status(run_id)
        for call in (status or {}).get("awaiting_approval", []):
            print(f"approval asked: {call['tool']}({call['arguments']}) -> "
                  f"{'deny' if deny else 'approve'}")
            await undying.llm.approve(app, run_id, call["call_id"], approved=not deny,
                                      reason="not this time" if deny else "")
        await asyncio.sleep(0.2)  # a person looking at a screen now and then


async def main(run_id: str, deny: bool) -> None:
    server = None
    if os.environ.get("ANTHROPIC_API_KEY"):
        raw = anthropic.AsyncAnthropic()
        model = os.environ.get("ANTHROPIC_MODEL", "claude-haiku-4-5")
    else:
        server = await ScriptedServer(script).start()
        raw = anthropic.AsyncAnthropic(base_url=server.anthropic_url, api_key="offline")
        model = "scripted"
    agent = build(undying.llm.durable(raw), model)
    try:
        async with app:
            handle = await app.start(agent, "Order A-17 arrived broken. Refund it, please.",
                                     run_id=run_id)
            human = asyncio.ensure_future(play_the_human(run_id, deny))
            try:
                answer = await handle.result()
            finally:
                human.cancel()
            usage = await handle.token_usage()
    finally:
        await raw.close()
        if server is not None:
            await server.stop()
    refunds = _ledger().execute("SELECT key, cents FROM refunds").fetchall()
    print(f"run {run_id!r}: {answer}")
    print(f"ledger: {refunds}; tokens spent {usage.spent.total} in {usage.spent.calls} call(s)")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    try:
        asyncio.run(main(args[0] if args else "refund-1", "--deny" in sys.argv))
    except KeyboardInterrupt:
        sys.exit("\ninterrupted: run it again with the same RUN_ID to continue")
