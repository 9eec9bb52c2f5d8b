"""A pydantic-ai durability engine: agents written with pydantic-ai become durable with undying.

::

    from undying.llm.pydantic_ai import UndyingDurability

    agent = Agent(model, name="support", capabilities=[UndyingDurability()])

    @app.workflow(name="support")
    async def support(ctx, question: str) -> str:
        return (await agent.run(question)).output

Inside a workflow every durable unit of the agent (each model request, each tool call, tool
discovery) is a journaled undying step named by pydantic-ai's journal naming
(``<agent>__model_request`` ...); outside a workflow the agent runs as usual. It plugs into
pydantic-ai's public ``durable_exec`` surface as a *callable* backend (undying runs an async
callback as a named step, like Prefect's tasks), with values journaled as JSON (pydantic-ai's
``JSON_CODEC``), so undying's codec only ever sees plain data.

Tool calls run one after another inside a workflow: undying numbers journal positions in call
order, and sequential calls make that order the model's, whatever order tools finish in. The
agent's run id (a journaled ``ctx.uuid4()``), its conversation id and its start time are
replay-stable, so a replay rebuilds the same run. Install with ``pip install pydantic-ai-slim``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic_ai.durable_exec import (
    JSON_CODEC,
    BaseDurabilityCapability,
    DurabilityEngineSpec,
    DurableOperationBackend,
    DurableOperationId,
    JournalCallableOperationBackend,
    ModelRequestId,
    RoleBasedOperationConfig,
    conversation_id_from_run_id,
)
from pydantic_ai.models import Model
from pydantic_ai.tools import AgentDepsT

from ..steps import current_context, step
from .usage import UsageRecorder

__all__ = ["StepConfig", "UndyingDurability"]


@dataclass(frozen=True, slots=True)
class StepConfig:
    """The undying step policy of one kind of durable unit."""

    retries: int = 0
    retry_delay: float = 1.0
    timeout: float | None = None


PROVIDER = "pydantic-ai"  # in token usage: (provider, model) = ("pydantic-ai", model name)


def _tokens(payload: object) -> dict[str, int]:
    """Tokens of a model request unit's result (a ``ModelResponse`` in JSON form)."""
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if not isinstance(usage, dict):
        return {}
    cached = int(usage.get("cache_read_tokens") or 0)
    return {
        "input": int(usage.get("input_tokens") or 0),
        "output": int(usage.get("output_tokens") or 0),
        "cached": cached,
    }


def _model_name(payload: object, default: str) -> str:
    name = payload.get("model_name") if isinstance(payload, dict) else None
    return str(name or default)


class _Backend(JournalCallableOperationBackend[StepConfig]):
    def __init__(self, *, model_name: str, **options: Any) -> None:
        super().__init__(**options)
        self.model_name = model_name

    async def execute(
        self,
        *,
        operation_id: DurableOperationId,
        name: str,
        body: Callable[[], Awaitable[object]],
        cache_key: tuple[object, ...],
        config: StepConfig,
    ) -> object:
        ctx = current_context()
        model = isinstance(operation_id, ModelRequestId) and ctx is not None
        meter = UsageRecorder(ctx, PROVIDER, self.model_name) if model and ctx else None

        async def unit() -> object:
            try:
                payload = await body()
            except Exception:
                if meter is not None:
                    await meter.spent(None, "error")
                raise
            if meter is not None:
                meter.model = _model_name(payload, meter.model)
                await meter.spent(_tokens(payload))
            return payload

        stepped = step(
            name=name, retries=config.retries, retry_delay=config.retry_delay,
            timeout=config.timeout,
        )(unit)
        payload = await stepped()
        if meter is not None:
            meter.model = _model_name(payload, meter.model)
            meter.replayed_if_not_spent(_tokens(payload))
        return payload


class UndyingDurability(BaseDurabilityCapability[AgentDepsT]):
    """The pydantic-ai capability that routes an agent's I/O through undying steps."""

    engine_spec = DurabilityEngineSpec(
        engine_name="undying",
        durable_unit_noun="step",
        durable_unit_plural="steps",
        durable_container_noun="workflow",
        codec=JSON_CODEC,
        wrapped_toolset_kinds=frozenset({"function", "mcp", "dynamic"}),
        toolset_lifecycles={
            "function": "enter-always",
            "mcp": "enter-in-durable-unit",
            "dynamic": "enter-never",
        },
        journal_discovery=True,
        sequential_tools_in_durable_context=True,
        tool_config_key="undying",
    )

    def __init__(
        self,
        *,
        models: Mapping[str, Model] | None = None,
        name: str | None = None,
        model_step: StepConfig | None = None,
        tool_step: StepConfig | None = None,
    ) -> None:
        """``model_step`` / ``tool_step``: the step policy of model requests (default: 3
        retries) and of tool calls and other units (default: one attempt)."""
        super().__init__(models=models, name=name)
        self._model_step = model_step or StepConfig(retries=3)
        self._tool_step = tool_step or StepConfig()

    @property
    def in_durable_context(self) -> bool:
        return current_context() is not None

    def get_default_run_id(self) -> str | None:
        ctx = current_context()
        return None if ctx is None else str(ctx.uuid4())  # journaled: the same on replay

    def get_default_conversation_id(self, run_id: str) -> str | None:
        return conversation_id_from_run_id(run_id) if self.in_durable_context else None

    async def get_run_start_time(self, run_id: str) -> datetime | None:
        ctx = current_context()
        return None if ctx is None else ctx.now()

    def get_durable_operation_backend(self) -> DurableOperationBackend[Any]:
        return _Backend(
            model_name=self.default_model_id or "default",
            agent_name=self.name,
            default_model_id=self.default_model_id,
            config=RoleBasedOperationConfig(
                model=self._model_step,
                event=self._tool_step,
                capability=self._tool_step,
                tool=self._tool_step,
            ),
        )
