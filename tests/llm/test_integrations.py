"""Agents written with pydantic-ai and openai-agents, made durable by undying: inside a
workflow their model calls and tool calls are journaled steps, so a replay (a fork replays
the whole journal) sends no request and runs no tool again."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from agents import Agent as OpenAIAgent
from agents import Runner, function_tool, set_tracing_disabled
from agents.models.openai_provider import OpenAIProvider
from llm_helpers import replay_all
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider as PydanticOpenAIProvider

from undying import App, Context
from undying.llm.openai_agents import durable_run_config, durable_tool
from undying.llm.pydantic_ai import UndyingDurability
from undying.llm.testing import ScriptedServer, call_tools, reply

SCRIPT = [call_tools(("lookup", {"city": "Paris"})), reply("It is sunny in Paris")]
CALLS: list[str] = []


def test_a_pydantic_ai_agent_replays_without_requests(app: App, run: Any) -> None:
    async def body() -> None:
        CALLS.clear()
        async with ScriptedServer(SCRIPT) as server:
            client = openai.AsyncOpenAI(base_url=server.openai_url, api_key="x")
            provider = PydanticOpenAIProvider(openai_client=client)
            agent = Agent(OpenAIChatModel("gpt-x", provider=provider), name="weather",
                          capabilities=[UndyingDurability()])

            @agent.tool_plain
            async def lookup(city: str) -> str:
                CALLS.append(city)
                return f"{city}: sunny"

            @app.workflow(name="weather")
            async def weather(ctx: Context, question: str) -> str:
                return str((await agent.run(question)).output)

            async with app:
                first = await (await app.start(weather, "Paris?", run_id="w1")).result(timeout=30)
                names = [e.name for e in await app.store.load_journal_meta("w1")]
                fork = await replay_all(app, "w1")
                again = await fork.result(timeout=30)
                spent, saved = await app.token_usage("w1"), await fork.token_usage()
            assert server.requests["chat.completions"] == 2
            assert first == again == "It is sunny in Paris" and CALLS == ["Paris"]
            assert names == ["uuid", "weather__model.request",
                             "weather__function_toolset__<agent>.call_tool:lookup",
                             "weather__model.request"]
            assert [(m.provider, m.model, m.spent.calls) for m in spent.by_model] == [
                ("pydantic-ai", "gpt-x", 2)
            ]
            assert spent.spent.output_tokens == 8 + 5  # the scripted tool call, then 5 words
            assert saved.saved == spent.spent and saved.spent.calls == 0
            outside = await agent.run("Paris?")  # not in a workflow: a plain agent run
            assert outside.output == first and server.requests["chat.completions"] == 4
            await client.close()

    run(body())


@function_tool
async def lookup(city: str) -> str:
    """Look the weather up."""
    CALLS.append(city)
    return f"{city}: sunny"


LOOKUP = durable_tool(lookup)


@pytest.mark.parametrize("streamed", [False, True])
def test_an_openai_agents_run_replays_without_requests(app: App, run: Any,
                                                       streamed: bool) -> None:
    set_tracing_disabled(True)

    async def body() -> None:
        CALLS.clear()
        async with ScriptedServer(SCRIPT) as server:
            client = openai.AsyncOpenAI(base_url=server.openai_url, api_key="x", max_retries=0)
            config = durable_run_config(OpenAIProvider(openai_client=client, use_responses=True))
            agent = OpenAIAgent(name="weather", instructions="Be brief.", tools=[LOOKUP],
                                model="gpt-x")

            @app.workflow(name="weather")
            async def weather(ctx: Context, question: str) -> str:
                if streamed:
                    result = Runner.run_streamed(agent, question, run_config=config)
                    async for _ in result.stream_events():
                        pass
                    return str(result.final_output)
                return str((await Runner.run(agent, question, run_config=config)).final_output)

            async with app:
                first = await (await app.start(weather, "Paris?", run_id="a1")).result(timeout=30)
                names = [e.name for e in await app.store.load_journal_meta("a1")]
                fork = await replay_all(app, "a1")
                again = await fork.result(timeout=30)
                spent, saved = await app.token_usage("a1"), await fork.token_usage()
            assert server.requests["responses"] == 2
            assert first == again == "It is sunny in Paris" and CALLS == ["Paris"]
            assert spent.spent.calls == 2 and spent.spent.output_tokens == 8 + 5
            assert saved.saved == spent.spent and saved.spent.calls == 0
            kind = "stream_response" if streamed else "get_response"
            assert names == [f"openai_agents.gpt-x.{kind}", "openai_agents.tool.lookup",
                             f"openai_agents.gpt-x.{kind}"]
            await client.close()

    run(body())
