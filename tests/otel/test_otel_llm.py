"""A durable model call's step span carries the GenAI semantic-convention attributes."""

from __future__ import annotations

import asyncio

import openai
from conftest import Traced, attrs

import undying
import undying.llm
from undying import Context
from undying.llm.testing import ScriptedServer, reply
from undying.testing import temp_app


def test_a_model_call_span_has_the_gen_ai_attributes(traced: Traced, db_path: str) -> None:
    app = temp_app(db_path)

    async def body() -> None:
        async with ScriptedServer([reply("forty-two")]) as server:
            raw = openai.AsyncOpenAI(base_url=server.openai_url, api_key="test")
            client = undying.llm.durable(raw)

            @app.workflow(name="ask")
            async def ask(ctx: Context) -> str:
                done = await client.chat.completions.create(
                    model="m-small", messages=[{"role": "user", "content": "hi"}]
                )
                return str(done.choices[0].message.content)

            try:
                async with app:
                    handle = await app.start(ask, run_id="q")
                    assert await handle.result(timeout=30) == "forty-two"
            finally:
                await raw.close()

    asyncio.run(body())
    [call] = [s for s in traced.steps() if "openai.chat.completions.create" in s.name]
    got = attrs(call)
    assert got["gen_ai.provider.name"] == "openai"
    assert got["gen_ai.operation.name"] == "chat"
    assert got["gen_ai.request.model"] == "m-small"
    assert isinstance(got["gen_ai.usage.input_tokens"], int)
    assert isinstance(got["gen_ai.usage.output_tokens"], int)
    assert got["gen_ai.usage.input_tokens"] + got["gen_ai.usage.output_tokens"] > 0  # type: ignore[operator]
