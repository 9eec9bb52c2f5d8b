"""Helpers for undying.llm tests: the real SDK clients against the scripted loopback server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import openai

import undying
import undying.llm
from undying.llm.testing import ScriptedServer


@asynccontextmanager
async def clients(
    server: ScriptedServer, **options: Any
) -> AsyncIterator[tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic]]:
    """Durable OpenAI and Anthropic clients on ``server``, closed afterwards."""
    options.setdefault("retry_delay", 0.01)
    raw_o = openai.AsyncOpenAI(base_url=server.openai_url, api_key="test")
    raw_a = anthropic.AsyncAnthropic(base_url=server.anthropic_url, api_key="test")
    try:
        yield undying.llm.durable(raw_o, **options), undying.llm.durable(raw_a, **options)
    finally:
        await raw_o.close()
        await raw_a.close()


USER = [{"role": "user", "content": "hi"}]


async def replay_all(app: undying.App, run_id: str) -> undying.RunHandle[Any]:
    """A fork of the run that reuses every journal entry: a replay of the whole run."""
    journal = await app.store.load_journal_meta(run_id)
    return await app.fork(run_id, from_step=journal[-1].seq + 1 if journal else 0)
