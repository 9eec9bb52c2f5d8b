"""Durable model calls: the official OpenAI and Anthropic clients, made journaled steps.

::

    client = undying.llm.durable(openai.AsyncOpenAI())

Inside a workflow, each model call of the returned client is a step named after its endpoint
(``openai.chat.completions.create``, ``anthropic.messages.stream``, ...): the first run calls
the provider and journals its answer; a replay returns the same SDK type from the journal
without a request. Outside a workflow it is a plain call. See docs/llm.md.

Nothing here imports a provider SDK until a client of that SDK is wrapped, so
``import undying`` and ``import undying.llm`` stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .usage import ModelTokens, Tokens, TokenUsage

if TYPE_CHECKING:
    from .tools import MaxTurnsExceeded, Tool, ToolRun, approve, run_tools, tool
    from .wrap import durable

__all__ = [
    "MaxTurnsExceeded",
    "ModelTokens",
    "TokenUsage",
    "Tokens",
    "Tool",
    "ToolRun",
    "approve",
    "durable",
    "run_tools",
    "tool",
]

_LAZY = {
    "durable": "wrap",
    "MaxTurnsExceeded": "tools",
    "Tool": "tools",
    "ToolRun": "tools",
    "approve": "tools",
    "run_tools": "tools",
    "tool": "tools",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'undying.llm' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
