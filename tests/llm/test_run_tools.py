"""run_tools: one step per tool call, parallel calls at fixed positions, per-tool policy,
durable human approval, max_turns; for both providers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from llm_helpers import USER, clients, replay_all

import undying
import undying.llm
from undying import App, Context
from undying.llm.testing import ScriptedServer, call_tools, reply

CALLS: list[str] = []


@undying.llm.tool
async def search(query: str) -> list[str]:
    """Search the web."""
    await asyncio.sleep(0.05 if query == "slow" else 0)  # finishes last, listed first
    CALLS.append(f"search {query}")
    return [f"result for {query}"]


@undying.llm.tool(at_most_once=True, requires_approval=True)
async def refund(order: str, cents: int) -> str:
    """Refund an order."""
    CALLS.append(f"refund {order} {cents} {undying.idempotency_key()}")
    return f"refunded {cents}"


@undying.llm.tool(retries=2, retry_delay=0.01)
async def flaky(n: int) -> int:
    CALLS.append(f"flaky {n}")
    if sum(c.startswith("flaky") for c in CALLS) < 3:
        raise ConnectionError("try again")
    return n * 2


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_parallel_tool_calls_replay_to_the_same_positions(
    app: App, run: Any, provider: str
) -> None:
    script = [
        call_tools(("search", {"query": "slow"}), ("search", {"query": "fast"})),
        call_tools(("flaky", {"n": 21})),
        reply("done: 42"),
    ]

    async def body() -> None:
        CALLS.clear()
        async with ScriptedServer(script) as server, clients(server) as (o, a):
            client = o if provider == "openai" else a
            extra = {"model": "m"} if provider == "openai" else {"model": "c", "max_tokens": 99}

            @app.workflow(name="agent")
            async def agent(ctx: Context) -> list[Any]:
                done = await undying.llm.run_tools(
                    client, tools=[search, flaky], messages=USER, **extra
                )
                return [done.text, done.turns, len(done.messages)]

            async with app:
                first = await (await app.start(agent, run_id="t1")).result(timeout=30)
                journal = await app.store.load_journal_meta("t1")
                replayed = await (await replay_all(app, "t1")).result(timeout=30)
            assert sum(server.requests.values()) == 3
        assert first == replayed == ["done: 42", 3, 7 if provider == "openai" else 6]
        # Each tool ran once (flaky: three attempts of one step), none again on replay.
        assert CALLS == ["search fast", "search slow", "flaky 21", "flaky 21", "flaky 21"]
        model = "openai.chat.completions.create" if provider == "openai" else (
            "anthropic.messages.create"
        )
        assert [e.name for e in journal] == [
            model, "tool.search", "tool.search", model, "tool.flaky", model
        ]
        assert journal[4].attempt == 3

    run(body())


def test_approval_waits_durably_and_a_refusal_goes_back_to_the_model(
    app: App, run: Any
) -> None:
    script = [
        call_tools(("refund", {"order": "A1", "cents": 500}),
                   ("refund", {"order": "B2", "cents": 900})),
        reply("refunded A1; B2 was refused"),
    ]

    async def body() -> None:
        CALLS.clear()
        async with ScriptedServer(script) as server, clients(server) as (_, a):

            @app.workflow(name="refunds")
            async def refunds(ctx: Context) -> str:
                done = await undying.llm.run_tools(
                    a, tools=[refund], messages=USER, model="c", max_tokens=99
                )
                results = done.messages[2]["content"]
                return " / ".join(f"{r['content']} {r['is_error']}" for r in results)

            async with app:
                handle = await app.start(refunds, run_id="a1")
                pending = await _awaiting(app, "a1")
                assert [p["arguments"]["order"] for p in pending] == ["A1", "B2"]
                assert await handle.status() == "waiting"  # released while it waits
                await undying.llm.approve(app, "a1", pending[1]["call_id"], approved=False,
                                          reason="too much")
                await undying.llm.approve(app, "a1", pending[0]["call_id"])
                assert not await undying.llm.approve(app, "a1", pending[0]["call_id"])
                result = await handle.result(timeout=30)
            assert server.requests["messages"] == 2
        assert result == (
            "refunded 500 False / a human refused this call: too much True"
        )
        assert CALLS == ["refund A1 500 a1:3"]  # model 0, approvals 1 and 2, refund 3

    run(body())


async def _awaiting(app: App, run_id: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = await app.get_status(run_id)
        if status and status.get("awaiting_approval") and await app.handle(run_id).status() == (
            "waiting"
        ):
            return list(status["awaiting_approval"])
        await app.wait_for_change(0.2)
    raise AssertionError("the run never asked for approval")


def test_max_turns_stops_a_model_that_never_answers(app: App, run: Any) -> None:
    async def body() -> None:
        async with ScriptedServer([call_tools(("search", {"query": "again"}))]) as server, \
                clients(server) as (o, _):

            @app.workflow(name="looping")
            async def looping(ctx: Context) -> str:
                try:
                    await undying.llm.run_tools(o, tools=[search], messages=USER, model="m",
                                                max_turns=3)
                except undying.llm.MaxTurnsExceeded as exc:
                    return str(exc)
                return "answered"

            async with app:
                result = await (await app.start(looping, run_id="m1")).result(timeout=30)
            assert server.requests["chat.completions"] == 3
        assert "after 3 turns" in result

    run(body())


def test_tool_definitions_come_from_the_signature() -> None:
    assert search.name == "search" and search.description == "Search the web."
    assert refund.parameters == {
        "type": "object",
        "properties": {"order": {"type": "string"}, "cents": {"type": "integer"}},
        "required": ["order", "cents"],
    }
    with pytest.raises(undying.InvalidArgument, match="tool name"):
        undying.llm.tool(name="bad name!")(lambda: None)
